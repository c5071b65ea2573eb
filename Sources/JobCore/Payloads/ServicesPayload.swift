/// `services` (steps 19-21): the plan's last job; it succeeds once every ComfyUI instance of the
/// machine serves every node the plan installed and every class type its workflows use.
package struct ServicesPayload: JobPayload, Equatable {
    package static let kind = "services"
    package static let step = JobStep.comfyUIServer

    /// Folders under `ComfyUI/custom_nodes` that must show up as `custom_nodes.NAME` in `/object_info`.
    package var nodes: [String]?
    /// Node types the plan's analysed workflows use; each must be a key of `/object_info`.
    package var classTypes: [String]?
    /// Seconds each instance may take to prove ready (default 300).
    package var deadlineSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case nodes, classTypes = "class_types", deadlineSeconds = "deadline_s"
    }

    package init(nodes: [String]? = nil, classTypes: [String]? = nil, deadlineSeconds: Double? = nil) {
        self.nodes = nodes
        self.classTypes = classTypes
        self.deadlineSeconds = deadlineSeconds
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        nodes = try container.decodeListIfPresent([String].self, forKey: .nodes)
        classTypes = try container.decodeListIfPresent([String].self, forKey: .classTypes)
        deadlineSeconds = try container.decodeIfPresent(Double.self, forKey: .deadlineSeconds)
    }

    package func validate() throws(JobFailure) {
        for name in nodes ?? [] where name.isEmpty || name.utf8.count > 200 {
            throw .invalidPayload("a services job names a node folder that is empty or longer than 200 bytes")
        }
        for type in classTypes ?? [] where type.isEmpty || type.utf8.count > 500 {
            throw .invalidPayload("a services job names a class type that is empty or longer than 500 bytes")
        }
        if let deadlineSeconds, !(0.1...86_400).contains(deadlineSeconds) {
            throw .invalidPayload("a services job's deadline_s must be between 0.1 and 86400")
        }
    }
}
