import Foundation
import PackagePlugin

/// Compiles `protocols/scripts/*.lua` into the JobQueue module, so the scripts other languages load
/// are exactly the ones the Swift workers run.
@main
struct EmbedScripts: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let scripts = context.package.directoryURL.appending(path: "protocols/scripts")
        let names = try FileManager.default.contentsOfDirectory(atPath: scripts.path)
            .filter { $0.hasSuffix(".lua") }
            .sorted()
        let inputs = names.map { scripts.appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedScripts.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(names.count) Lua scripts from protocols/scripts",
                executable: try context.tool(named: "embed-scripts").url,
                arguments: [output.path] + inputs.map(\.path),
                inputFiles: inputs,
                outputFiles: [output])
        ]
    }
}
