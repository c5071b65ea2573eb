import Foundation

/// Expands `${VAR}` from the worker's environment in job payload values, so secrets live on the
/// machine and never in Redis. A missing variable fails naming the variable, never a value.
package enum EnvironmentTemplate {
    package static func expand(_ template: String, environment: [String: String], field: String) throws(JobFailure) -> String {
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
    package static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_", name.count <= 128 else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }
}

/// What of the worker's environment a plan may reach. `${VAR}` in payloads expands only names the
/// machine's operator exposed (`--expose-env NAME`, `PROVISION_EXPOSE_ENV=A,B`), never the queue's
/// own credentials; child processes (git, uv, `install.py`) get a working environment without the
/// worker's secrets unless exposed.
package struct EnvironmentPolicy: Sendable {
    /// The worker's whole environment.
    package var environment: [String: String]
    /// Names the operator allows plans to use.
    package var exposed: Set<String>

    /// Names no plan can reach, exposed or not: the credentials of the queue itself.
    package static let neverExposed: Set<String> = ["PROVISION_REDIS_URL", "REDIS_URL", "PROVISION_REDIS_PASSWORD", "REDISCLI_AUTH"]

    /// Names every child process gets: what finding programs, locales, proxies, certificates, caches
    /// and the GPU need. Prefixes end in `_`.
    static let childNames: Set<String> = [
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
        "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TORCH_HOME", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    ]
    static let childPrefixes = ["LC_", "XDG_", "UV_", "PIP_", "CUDA_", "NVIDIA_", "GPU_MODE", "MOCK_GPU"]

    package init(environment: [String: String] = ProcessInfo.processInfo.environment, exposed: Set<String>? = nil) {
        self.environment = environment
        let given = exposed ?? Set((environment["PROVISION_EXPOSE_ENV"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        self.exposed = given.filter { !$0.isEmpty && !Self.neverExposed.contains($0) }
    }

    /// The values `${VAR}` may expand to.
    package var templateValues: [String: String] {
        environment.filter { exposed.contains($0.key) }
    }

    /// The environment of a child process: the working set and the exposed names, nothing else.
    package var childEnvironment: [String: String] {
        environment.filter { key, _ in
            guard !Self.neverExposed.contains(key) else { return false }
            return exposed.contains(key) || Self.childNames.contains(key) || Self.childPrefixes.contains { key.hasPrefix($0) }
        }
    }
}
