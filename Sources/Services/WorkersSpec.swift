/// The seed's `WORKERS` value (`comfyui:1`, `comfyui:2,other:1`): which connectors run and how
/// many instances of each per GPU.
package struct WorkersSpec: Sendable, Equatable {
    package var entries: [(name: String, perGPU: Int)]

    package init(entries: [(name: String, perGPU: Int)]) {
        self.entries = entries
    }

    package static func == (a: WorkersSpec, b: WorkersSpec) -> Bool {
        a.entries.map(\.name) == b.entries.map(\.name) && a.entries.map(\.perGPU) == b.entries.map(\.perGPU)
    }

    /// Parses `name:count` pairs separated by commas; a name without a count means 1.
    package init(parsing text: String) throws(ServicesError) {
        var entries: [(String, Int)] = []
        for part in text.split(separator: ",") {
            let pieces = part.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard let name = pieces.first, !name.isEmpty else { throw .invalidWorkers(text) }
            var count = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), (0...16).contains(parsed) else { throw .invalidWorkers(text) }
                count = parsed
            }
            entries.append((name, count))
        }
        self.entries = entries
    }

    /// ComfyUI instances per GPU (0 when `WORKERS` names no `comfyui`).
    package var comfyUIPerGPU: Int {
        entries.filter { $0.name == "comfyui" }.map(\.perGPU).reduce(0, +)
    }
}
