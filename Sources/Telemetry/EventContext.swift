import Foundation

/// The attributes every event of one machine carries: its id, GPU mode and workers (seed 002).
package struct EventContext: Sendable, Equatable {
    package var machineID: String
    /// `GPU_MODE`: `auto` (default) or `mock`, or whatever the operator set.
    package var gpuMode: String
    /// `MOCK_GPU_NUM` in mock mode; in auto mode the GPUs the NVIDIA driver lists, when it is loaded.
    package var gpuCount: Int?
    /// `WORKERS` (e.g. `comfyui:2`), else the shape of the worker pool (`processes=2,concurrency=4`).
    package var workersConfig: String

    package init(machineID: String, gpuMode: String = "auto", gpuCount: Int? = nil, workersConfig: String) {
        self.machineID = machineID
        self.gpuMode = gpuMode
        self.gpuCount = gpuCount
        self.workersConfig = workersConfig
    }

    /// Reads `GPU_MODE`, `MOCK_GPU_NUM`, `WORKERS` (and `PROVISION_WORKERS_CONFIG`, which the
    /// supervisor passes to its children) from `environment`.
    package static func fromEnvironment(
        machineID: String, environment: [String: String] = ProcessInfo.processInfo.environment,
        defaultWorkersConfig: String
    ) -> EventContext {
        let mode = environment["GPU_MODE"].flatMap { $0.isEmpty ? nil : String($0.prefix(64)) } ?? "auto"
        var count: Int?
        if mode == "mock" {
            count = environment["MOCK_GPU_NUM"].flatMap { Int($0) }.map { max(0, $0) } ?? 1
        } else if let listed = try? FileManager.default.contentsOfDirectory(atPath: "/proc/driver/nvidia/gpus") {
            count = listed.count
        }
        let workers = [environment["WORKERS"], environment["PROVISION_WORKERS_CONFIG"]]
            .compactMap { $0 }.first { !$0.isEmpty }.map { String($0.prefix(200)) } ?? defaultWorkersConfig
        return EventContext(machineID: machineID, gpuMode: mode, gpuCount: count, workersConfig: workers)
    }
}
