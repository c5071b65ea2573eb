import Foundation

/// A JSON value read by `StrictJSON`: RFC 8259 only, so what the queue script's lenient decoder
/// would take (hex numbers, duplicate keys where the last wins, `NaN`) is refused before it.
indirect enum StrictValue: Equatable {
    case null
    case bool(Bool)
    /// The number's text as written, and its value.
    case number(String, Double)
    case string(String)
    case array([StrictValue])
    /// Fields in document order (duplicates are refused while parsing).
    case object([(key: String, value: StrictValue)])

    static func == (lhs: StrictValue, rhs: StrictValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(_, let a), .number(_, let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)): return a.map(\.key) == b.map(\.key) && a.map(\.value) == b.map(\.value)
        default: return false
        }
    }

    subscript(key: String) -> StrictValue? {
        if case .object(let fields) = self { return fields.first { $0.key == key }?.value }
        return nil
    }

    /// "a string", "an array", … for sentences.
    var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number(let text, let value): return value.rounded() == value && !text.contains(".") && !text.contains("e") && !text.contains("E") ? "an integer" : "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// Why a document is not strict JSON, with where.
struct StrictJSONError: Error, CustomStringConvertible {
    let description: String
}

/// A strict JSON reader with a depth limit and line/column positions in its errors.
struct StrictJSON {
    static let maxDepth = 64

    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    static func parse(_ text: String) throws(StrictJSONError) -> StrictValue {
        var parser = StrictJSON(bytes: Array(text.utf8))
        parser.skipSpace()
        let value = try parser.value(path: "")
        parser.skipSpace()
        guard parser.index == parser.bytes.count else { throw parser.failure("text follows the JSON document") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func failure(_ problem: String) -> StrictJSONError {
        var line = 1
        var column = 1
        for byte in bytes[..<min(index, bytes.count)] {
            if byte == UInt8(ascii: "\n") { line += 1; column = 1 } else { column += 1 }
        }
        return StrictJSONError(description: "\(problem) (line \(line), column \(column))")
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipSpace() {
        while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
    }

    private mutating func value(path: String) throws(StrictJSONError) -> StrictValue {
        guard let byte = current else { throw failure("the document ends where a value was expected") }
        switch byte {
        case UInt8(ascii: "{"): return try object(path: path)
        case UInt8(ascii: "["): return try array(path: path)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number(path: path)
        default: throw failure("\(path.isEmpty ? "the document" : path) is not a JSON value")
        }
    }

    private mutating func literal(_ word: String) throws(StrictJSONError) {
        let expected = Array(word.utf8)
        guard index + expected.count <= bytes.count, Array(bytes[index..<(index + expected.count)]) == expected else {
            throw failure("a value is not JSON")
        }
        index += expected.count
    }

    private mutating func enter(_ path: String) throws(StrictJSONError) {
        depth += 1
        if depth > Self.maxDepth {
            throw failure("\(path.isEmpty ? "the document" : path) nests arrays and objects more than \(Self.maxDepth) levels deep")
        }
    }

    private mutating func object(path: String) throws(StrictJSONError) -> StrictValue {
        try enter(path)
        defer { depth -= 1 }
        index += 1
        var fields: [(key: String, value: StrictValue)] = []
        var seen = Set<String>()
        skipSpace()
        if current == UInt8(ascii: "}") { index += 1; return .object([]) }
        while true {
            skipSpace()
            guard current == UInt8(ascii: "\"") else { throw failure("an object key must be a string") }
            let key = try string()
            let fieldPath = path.isEmpty ? key : "\(path).\(key)"
            guard seen.insert(key).inserted else { throw failure("\(fieldPath) is given twice") }
            skipSpace()
            guard current == UInt8(ascii: ":") else { throw failure("':' expected after the key \(fieldPath)") }
            index += 1
            skipSpace()
            fields.append((key, try value(path: fieldPath)))
            skipSpace()
            if current == UInt8(ascii: ",") { index += 1; continue }
            if current == UInt8(ascii: "}") { index += 1; return .object(fields) }
            throw failure("',' or '}' expected in \(path.isEmpty ? "the document" : path)")
        }
    }

    private mutating func array(path: String) throws(StrictJSONError) -> StrictValue {
        try enter(path)
        defer { depth -= 1 }
        index += 1
        var items: [StrictValue] = []
        skipSpace()
        if current == UInt8(ascii: "]") { index += 1; return .array([]) }
        while true {
            skipSpace()
            items.append(try value(path: "\(path)[\(items.count)]"))
            skipSpace()
            if current == UInt8(ascii: ",") { index += 1; continue }
            if current == UInt8(ascii: "]") { index += 1; return .array(items) }
            throw failure("',' or ']' expected in \(path.isEmpty ? "the document" : path)")
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` and nothing glued to it (`0x2`).
    private mutating func number(path: String) throws(StrictJSONError) -> StrictValue {
        let start = index
        let shown = path.isEmpty ? "the document" : path
        func digits(_ parser: inout StrictJSON) -> Int {
            var count = 0
            while let byte = parser.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { parser.index += 1; count += 1 }
            return count
        }
        if current == UInt8(ascii: "-") { index += 1 }
        if current == UInt8(ascii: "0") {
            index += 1
        } else if digits(&self) == 0 {
            throw failure("\(shown) is not a JSON number")
        }
        if current == UInt8(ascii: ".") {
            index += 1
            guard digits(&self) > 0 else { throw failure("\(shown) is not a JSON number") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard digits(&self) > 0 else { throw failure("\(shown) is not a JSON number") }
        }
        if let byte = current, byte.isASCIILetterOrDigit || byte == UInt8(ascii: ".") {
            throw failure("\(shown) is not a JSON number (hexadecimal, octal and other spellings are not JSON)")
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        guard let value = Double(text), value.isFinite else { throw failure("\(shown) is a number out of range") }
        return .number(text, value)
    }

    private mutating func string() throws(StrictJSONError) -> String {
        index += 1
        var scalars: [UInt8] = []
        while true {
            guard let byte = current else { throw failure("a string is not closed") }
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: scalars, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escape = current else { throw failure("a string is not closed") }
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(escape)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        guard current == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                            throw failure("a string has an unpaired surrogate escape")
                        }
                        index += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw failure("a string has an unpaired surrogate escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(code) {
                        throw failure("a string has an unpaired surrogate escape")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw failure("a string has an invalid escape") }
                    scalars.append(contentsOf: Array(String(Character(scalar)).utf8))
                default:
                    throw failure("a string has an invalid escape")
                }
            default:
                guard byte >= 0x20 else { throw failure("a string contains a control character") }
                scalars.append(byte)
            }
        }
    }

    private mutating func hex4() throws(StrictJSONError) -> UInt32 {
        guard index + 4 <= bytes.count, let code = UInt32(String(decoding: bytes[index..<(index + 4)], as: UTF8.self), radix: 16) else {
            throw failure("a string has an invalid \\u escape")
        }
        index += 4
        return code
    }
}

extension UInt8 {
    fileprivate var isASCIILetterOrDigit: Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self)
            || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
    }
}

/// The plan's shape (protocols/schemas/plan.schema.json) checked on the strict parse, naming the
/// field and the problem; ranges, ids and the graph stay the script's to check.
enum PlanShape {
    static let integerFields = ["max_attempts", "backoff_ms", "backoff_max_ms", "lease_ms", "timeout_ms"]

    static func check(_ text: String) throws(StrictJSONError) {
        let plan = try StrictJSON.parse(text)
        guard case .object = plan else { throw StrictJSONError(description: "the plan is \(plan.kind), not an object") }
        try expect(plan["version"], "version", integer: true)
        try expect(plan["plan_id"], "plan_id", string: true)
        if let machine = plan["machine_id"] { try expect(machine, "machine_id", string: true) }
        if let meta = plan["meta"], case .object = meta {} else if let meta = plan["meta"] {
            throw StrictJSONError(description: "meta must be an object, not \(meta.kind)")
        }
        guard let jobs = plan["jobs"] else { throw StrictJSONError(description: "jobs is missing") }
        guard case .array(let list) = jobs else { throw StrictJSONError(description: "jobs must be an array, not \(jobs.kind)") }
        for (index, job) in list.enumerated() {
            let at = "jobs[\(index)]"
            guard case .object = job else { throw StrictJSONError(description: "\(at) must be an object, not \(job.kind)") }
            try expect(job["id"], "\(at).id", string: true)
            try expect(job["kind"], "\(at).kind", string: true)
            if let payload = job["payload"], case .object = payload {} else if let payload = job["payload"] {
                throw StrictJSONError(description: "\(at).payload must be an object, not \(payload.kind)")
            }
            if let label = job["label"] { try expect(label, "\(at).label", string: true) }
            if let dependencies = job["depends_on"] {
                guard case .array(let ids) = dependencies else {
                    throw StrictJSONError(description: "\(at).depends_on must be an array of job ids, not \(dependencies.kind)")
                }
                for (position, id) in ids.enumerated() { try expect(id, "\(at).depends_on[\(position)]", string: true) }
            }
            for field in integerFields {
                if let value = job[field] { try expect(value, "\(at).\(field)", integer: true) }
            }
        }
    }

    private static func expect(_ value: StrictValue?, _ field: String, string: Bool = false, integer: Bool = false) throws(StrictJSONError) {
        guard let value else { throw StrictJSONError(description: "\(field) is missing") }
        if string {
            guard case .string = value else { throw StrictJSONError(description: "\(field) must be a string, not \(value.kind)") }
        }
        if integer {
            guard case .number(_, let number) = value, number.rounded() == number else {
                throw StrictJSONError(description: "\(field) must be an integer, not \(value.kind)")
            }
        }
    }
}
