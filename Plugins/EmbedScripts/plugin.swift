import Foundation
import PackagePlugin

/// Compiles `protocols/scripts/*.lua` into the JobQueue module, so the scripts other languages load
/// are exactly the ones the Swift workers run.
@main
struct EmbedScripts: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let scripts = context.package.directoryURL.appending(path: "protocols/scripts")
        var names = try FileManager.default.contentsOfDirectory(atPath: scripts.path)
            .filter { $0.hasSuffix(".lua") }
            .sorted()
        var inputs = names.map { scripts.appending(path: $0) }
        // Services ships the stand-in ComfyUI that tests use, so `provision demo` runs offline from a bare clone.
        if target.name == "Services" {
            names = ["fake_comfyui.py"]
            inputs = [context.package.directoryURL.appending(path: "Tests/fixtures/fake_comfyui.py")]
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedScripts.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(names.joined(separator: ", ")) into \(target.name)",
                executable: try context.tool(named: "embed-scripts").url,
                arguments: [output.path] + inputs.map(\.path),
                inputFiles: inputs,
                outputFiles: [output])
        ]
    }
}
