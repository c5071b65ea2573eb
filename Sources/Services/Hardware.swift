import Foundation
import ProcessControl

/// One GPU as `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader` reports it.
package struct GPU: Sendable, Equatable, Codable {
    package var index: Int
    package var uuid: String
    package var name: String
    /// As printed (`81559 MiB`), or `mock`.
    package var memoryTotal: String

    package init(index: Int, uuid: String, name: String, memoryTotal: String) {
        self.index = index
        self.uuid = uuid
        self.name = name
        self.memoryTotal = memoryTotal
    }

    enum CodingKeys: String, CodingKey {
        case index, uuid, name, memoryTotal = "memory_total"
    }
}

/// What startup step 9 found: real GPUs, mock GPUs (`GPU_MODE=mock`, `MOCK_GPU_NUM=N`), or none.
package struct Hardware: Sendable, Equatable {
    /// `actual`, `mock` or `cpu`: the `gpu_mode` of events.
    package enum Mode: String, Sendable, Codable {
        case actual, mock, cpu
    }

    package var mode: Mode
    package var gpus: [GPU]
    /// Why detection ended where it did, for the step event (`nvidia-smi not found`, …).
    package var note: String?

    package init(mode: Mode, gpus: [GPU], note: String? = nil) {
        self.mode = mode
        self.gpus = gpus
        self.note = note
    }

    /// Parses nvidia-smi's CSV lines; lines that do not have four fields are skipped.
    package static func parseNvidiaSMI(_ text: String) -> [GPU] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard fields.count >= 4, let index = Int(fields[0]) else { return nil }
            return GPU(index: index, uuid: fields[1], name: fields[2], memoryTotal: fields[3...].joined(separator: ","))
        }
    }

    /// Step 9: `GPU_MODE=mock` with `MOCK_GPU_NUM` (default 1) wins; else nvidia-smi (a missing
    /// binary or a failing one means no GPU); no GPU means one CPU instance.
    package static func detect(
        environment: [String: String] = ProcessInfo.processInfo.environment, nvidiaSMI: String = "nvidia-smi"
    ) async -> Hardware {
        if environment["GPU_MODE"]?.lowercased() == "mock" {
            let count = max(1, min(64, Int(environment["MOCK_GPU_NUM"] ?? "") ?? 1))
            let gpus = (0..<count).map { GPU(index: $0, uuid: "GPU-mock-\($0)", name: "Mock GPU \($0)", memoryTotal: "mock") }
            return Hardware(mode: .mock, gpus: gpus, note: "GPU_MODE=mock, MOCK_GPU_NUM=\(count)")
        }
        let path: String
        do { path = try ChildProcess.locate(nvidiaSMI) } catch {
            return Hardware(mode: .cpu, gpus: [], note: "nvidia-smi not found")
        }
        let arguments = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader"]
        guard let output = try? await ChildProcess.run(path, arguments, timeout: .seconds(30)), output.succeeded else {
            return Hardware(mode: .cpu, gpus: [], note: "nvidia-smi failed")
        }
        let gpus = parseNvidiaSMI(output.output)
        return gpus.isEmpty ? Hardware(mode: .cpu, gpus: [], note: "nvidia-smi listed no GPU") : Hardware(mode: .actual, gpus: gpus)
    }
}
