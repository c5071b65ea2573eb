/// `download`: one model file into the models folder (`path`, or `directory` and `filename`).
package struct DownloadPayload: JobPayload, Equatable {
    package static let kind = "download"
    package static let step = JobStep.models

    package var url: String
    package var path: String?
    package var directory: String?
    package var filename: String?
    package var sha256: String?
    package var size: Int64?
    package var connections: Int?
    /// Header values may name variables the worker's operator exposed, as `${VAR}`.
    package var headers: [String: String]?

    package init(
        url: String, path: String? = nil, directory: String? = nil, filename: String? = nil, sha256: String? = nil, size: Int64? = nil,
        connections: Int? = nil, headers: [String: String]? = nil
    ) {
        self.url = url
        self.path = path
        self.directory = directory
        self.filename = filename
        self.sha256 = sha256
        self.size = size
        self.connections = connections
        self.headers = headers
    }

    /// `path`, or `directory/filename`.
    package var relativePath: String? {
        if let path { return path }
        guard let directory, let filename else { return nil }
        return directory + "/" + filename
    }

    package func validate() throws(JobFailure) {
        if let sha256, !PayloadRules.isSHA256(sha256) { throw .invalidPayload("sha256 must be 64 hexadecimal digits") }
        if let size, size < 0 { throw .invalidPayload("size must not be negative") }
        if let connections, !(1...64).contains(connections) { throw .invalidPayload("connections must be between 1 and 64") }
        for name in (headers ?? [:]).keys {
            guard !name.isEmpty, name.count <= 100, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_".contains($0)) }) else {
                throw .invalidPayload("a header name must be letters, digits, '-' or '_'")
            }
        }
        if relativePath == nil { throw .invalidPayload("a download needs path, or directory and filename") }
    }
}

/// `verify`: the machine checked against what the plan installed. Empty lists may be stored as
/// `{}` by Redis's cjson, and read as empty.
package struct VerifyPayload: JobPayload, Equatable {
    package static let kind = "verify"
    package static let step = JobStep.models

    package struct Node: Codable, Sendable, Equatable {
        package var name: String
        package var commit: String

        package init(name: String, commit: String) {
            self.name = name
            self.commit = commit
        }
    }

    package struct Model: Codable, Sendable, Equatable {
        package var path: String
        package var size: Int64?
        package var sha256: String?

        package init(path: String, size: Int64? = nil, sha256: String? = nil) {
            self.path = path
            self.size = size
            self.sha256 = sha256
        }
    }

    package struct Checkout: Codable, Sendable, Equatable {
        package var commit: String

        package init(commit: String) { self.commit = commit }
    }

    package var nodes: [Node]?
    package var models: [Model]?
    package var deep: Bool?
    package var comfyui: Checkout?
    package var pythonPackages: [String]?

    enum CodingKeys: String, CodingKey {
        case nodes, models, deep, comfyui, pythonPackages = "python_packages"
    }

    package init(nodes: [Node]? = nil, models: [Model]? = nil, deep: Bool? = nil, comfyui: Checkout? = nil, pythonPackages: [String]? = nil) {
        self.nodes = nodes
        self.models = models
        self.deep = deep
        self.comfyui = comfyui
        self.pythonPackages = pythonPackages
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        nodes = try container.decodeListIfPresent([Node].self, forKey: .nodes)
        models = try container.decodeListIfPresent([Model].self, forKey: .models)
        deep = try container.decodeIfPresent(Bool.self, forKey: .deep)
        comfyui = try container.decodeIfPresent(Checkout.self, forKey: .comfyui)
        pythonPackages = try container.decodeListIfPresent([String].self, forKey: .pythonPackages)
    }

    package func validate() throws(JobFailure) {
        for node in nodes ?? [] {
            guard PayloadRules.isNodeName(node.name) else { throw .invalidPayload("each node needs a name that is a valid folder name") }
            guard PayloadRules.isFullCommit(node.commit) else { throw .invalidPayload("node \(node.name) needs a 40-digit lowercase commit") }
        }
        for model in models ?? [] {
            guard PayloadRules.isRelativePath(model.path) else { throw .invalidPayload("the model path '\(model.path.prefix(100))' must be a relative path inside the models folder") }
            if let size = model.size, size < 0 { throw .invalidPayload("the size of \(model.path) must be a non-negative integer") }
            if let sha256 = model.sha256, !PayloadRules.isSHA256(sha256) { throw .invalidPayload("the sha256 of \(model.path) must be 64 hexadecimal digits") }
        }
        if let comfyui, !PayloadRules.isFullCommit(comfyui.commit) { throw .invalidPayload("comfyui.commit must be a 40-digit lowercase commit") }
        for line in pythonPackages ?? [] where line.isEmpty || line.utf8.count > 500 { throw .invalidPayload("python_packages must be requirement strings") }
    }
}

/// `noop`: does nothing and succeeds; measures the queue itself. Its payload is empty.
package struct NoopPayload: JobPayload, Equatable {
    package static let kind = "noop"
    package static let step = JobStep.customNodes

    package init() {}

    package init(from decoder: any Decoder) throws {}
    package func encode(to encoder: any Encoder) throws {
        _ = encoder.container(keyedBy: EmptyKeys.self)
    }

    enum EmptyKeys: CodingKey {}
}

/// `sleep`: waits, optionally failing its first attempts or reporting progress like a download
/// (tests and benchmarks).
package struct SleepPayload: JobPayload, Equatable {
    package static let kind = "sleep"
    package static let step = JobStep.customNodes

    package struct Failure: Codable, Sendable, Equatable {
        package var message: String
        /// Attempts up to and including this one fail; absent: every attempt fails.
        package var untilAttempt: Int?
        package var retryable: Bool?

        enum CodingKeys: String, CodingKey {
            case message, untilAttempt = "until_attempt", retryable
        }

        package init(message: String, untilAttempt: Int? = nil, retryable: Bool? = nil) {
            self.message = message
            self.untilAttempt = untilAttempt
            self.retryable = retryable
        }
    }

    package var ms: Int
    package var fail: Failure?
    /// Reports progress every `progressEveryMs` as if this many bytes arrived evenly over `ms`.
    package var progressBytes: Int64?
    package var progressEveryMs: Int?

    enum CodingKeys: String, CodingKey {
        case ms, fail, progressBytes = "progress_bytes", progressEveryMs = "progress_every_ms"
    }

    package init(ms: Int, fail: Failure? = nil, progressBytes: Int64? = nil, progressEveryMs: Int? = nil) {
        self.ms = ms
        self.fail = fail
        self.progressBytes = progressBytes
        self.progressEveryMs = progressEveryMs
    }

    package func validate() throws(JobFailure) {
        guard (0...86_400_000).contains(ms) else { throw .invalidPayload("ms must be between 0 and 86400000") }
        if let every = progressEveryMs, !(1...60_000).contains(every) { throw .invalidPayload("progress_every_ms must be between 1 and 60000") }
        if let bytes = progressBytes, bytes < 0 { throw .invalidPayload("progress_bytes must not be negative") }
    }
}
