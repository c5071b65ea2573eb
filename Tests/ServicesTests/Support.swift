import Foundation
import RedisClient
import Services
import Synchronization
import TestSupport

/// A ComfyUI folder whose main.py is the stand-in (Tests/fixtures/fake_comfyui.py), with custom
/// nodes given as folder name → `__init__.py` text.
func makeComfyUI(_ nodes: [String: String]) throws -> URL {
    let root = try makeTemporaryDirectory("comfyui")
    let comfy = root.appendingPathComponent("ComfyUI")
    for (name, source) in nodes {
        let folder = comfy.appendingPathComponent("custom_nodes/\(name)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try source.write(to: folder.appendingPathComponent("__init__.py"), atomically: true, encoding: .utf8)
    }
    try FileManager.default.createDirectory(at: comfy.appendingPathComponent("custom_nodes"), withIntermediateDirectories: true)
    try FileManager.default.copyItem(
        at: packageRoot().appendingPathComponent("Tests/fixtures/fake_comfyui.py"), to: comfy.appendingPathComponent("main.py"))
    return comfy
}

let goodNode = "NODE_CLASS_MAPPINGS = {'GoodNode': object, 'GoodSampler': object}\n"
let badNode = "def load():\n    raise ValueError('boom: missing weights file')\nload()\nNODE_CLASS_MAPPINGS = {'BadNode': object}\n"

/// A base port with `count` free ports after it.
func freePorts(_ count: Int) throws -> Int {
    for _ in 0..<50 {
        let base = try freeLoopbackPort()
        guard base + count < 65535 else { continue }
        if (0..<count).allSatisfy({ LoopbackHTTP.canBind(host: "127.0.0.1", port: base + $0) }) { return base }
    }
    throw CocoaError(.fileNoSuchFile)
}

/// Keeps every event an instance supervisor reports.
final class Recorder: InstanceObserver {
    let events = Mutex<[(InstanceEvent, InstanceStatus)]>([])

    func instance(_ event: InstanceEvent, status: InstanceStatus) async {
        events.withLock { $0.append((event, status)) }
    }

    func all(_ name: String) -> [InstanceEvent] {
        events.withLock { $0.filter { $0.1.instance.name == name }.map(\.0) }
    }

    func failure(_ name: String) -> InstanceFailure? {
        for event in all(name) { if case .failed(let failure) = event { return failure } }
        return nil
    }

    func count(_ name: String, where match: (InstanceEvent) -> Bool) -> Int { all(name).filter(match).count }

    func pids() -> Set<Int32> { Set(events.withLock { $0.compactMap(\.1.pid) }) }
}

/// Whether a process with this pid exists (a zombie counts as gone).
func processExists(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    return !stat.contains(") Z ")
}
