/// Why a fixture (a generated file, a git repository, a loopback origin) could not be made.
package enum FixtureError: Error, CustomStringConvertible {
    case write(String)
    case git(String, String)
    case origin(String)

    package var description: String {
        switch self {
        case .write(let path): return "could not write \(path)"
        case .git(let command, let output): return "git \(command) failed: \(output)"
        case .origin(let why): return why
        }
    }
}
