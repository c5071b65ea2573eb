/// Expands `${VAR}` from the worker's environment in job payload values, so secrets live on the
/// machine and never in Redis. A missing variable fails naming the variable, never a value.
public enum EnvironmentTemplate {
    public static func expand(_ template: String, environment: [String: String], field: String) throws(JobFailure) -> String {
        var value = ""
        var rest = Substring(template)
        while let open = rest.range(of: "${") {
            value += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else {
                throw .invalidPayload("\(field) has an unclosed ${")
            }
            let variable = String(rest[open.upperBound..<close])
            guard isIdentifier(variable) else { throw .invalidPayload("\(field) names '${\(variable.prefix(40))}', which is not a variable name") }
            guard let found = environment[variable] else {
                throw JobFailure(type: "missing_variable", message: "\(field) needs the environment variable \(variable), which is not set on this worker", retryable: false)
            }
            value += found
            rest = rest[rest.index(after: close)...]
        }
        return value + rest
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`
    public static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_", name.count <= 128 else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }
}
