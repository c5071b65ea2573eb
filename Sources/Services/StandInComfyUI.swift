import Foundation

/// The stand-in ComfyUI (Tests/fixtures/fake_comfyui.py, embedded at build time): what `provision
/// demo` runs as ComfyUI's main.py so the demo stays offline and fast.
package enum StandInComfyUI {
    /// The script's text.
    package static var source: String {
        EmbeddedScripts.base64["fake_comfyui"].flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}
