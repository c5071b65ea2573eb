import Foundation

/// A parsed JSON document, for everything that comes from elsewhere (plans, manifests, lockfiles,
/// workflows, the node registry): one strict RFC 8259 reader, with bounded size and depth, duplicate
/// keys, hexadecimal and octal-looking numbers refused, and errors that name the field and position.
package indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    package subscript(key: String) -> JSONValue? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    package var object: [String: JSONValue]? {
        if case .object(let fields) = self { return fields }
        return nil
    }

    package var array: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }

    package var string: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    package var number: Double? {
        if case .number(let value) = self { return value }
        return nil
    }

    package var bool: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// An integral number that fits in Int (node ids, modes, sizes).
    package var int: Int? {
        guard case .number(let value) = self, value.rounded() == value, abs(value) < 9.007_199_254_740_992e15 else { return nil }
        return Int(value)
    }

    /// A node id as ComfyUI writes it: a number (UI format) or a string (API format, `"12"` or `"5:3"`).
    package var identifier: String? {
        switch self {
        case .string(let text): return text
        case .number: return int.map(String.init)
        default: return nil
        }
    }

    /// The kind of value, for error sentences ("an array", "a string", …).
    package var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// How much input a parse accepts.
package struct JSONLimits: Sendable {
    /// Largest document, in bytes.
    package var maxBytes: Int
    /// Deepest nesting of arrays and objects.
    package var maxDepth: Int

    /// Accept `NaN`, `Infinity` and lone surrogate escapes (as U+FFFD), which Python's json.dumps and
    /// browsers write into ComfyUI workflows; every other input is refused for them.
    package var workflowQuirks: Bool
    /// Skip a UTF-8 byte order mark, as editors on Windows write one.
    package var byteOrderMark: Bool

    package init(maxBytes: Int = 64 << 20, maxDepth: Int = 128, workflowQuirks: Bool = false, byteOrderMark: Bool = true) {
        self.maxBytes = maxBytes
        self.maxDepth = maxDepth
        self.workflowQuirks = workflowQuirks
        self.byteOrderMark = byteOrderMark
    }
}

/// Why a document is not usable JSON, in one sentence.
package struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    package var reason: String
    package var line: Int
    package var column: Int

    package var description: String { "\(reason) at line \(line), column \(column)" }
}

extension JSONValue {
    /// Parses `data` as one JSON value (RFC 8259), refusing more than `limits` allow.
    package static func parse(_ data: Data, limits: JSONLimits = JSONLimits()) throws(JSONParseError) -> JSONValue {
        guard data.count <= limits.maxBytes else {
            throw JSONParseError(reason: "it is \(data.count) bytes, more than the limit of \(limits.maxBytes)", line: 1, column: 1)
        }
        let bytes = [UInt8](data)
        var parser = JSONParser(bytes: bytes, limits: limits)
        return try parser.parseDocument()
    }

    package static func parse(_ text: String, limits: JSONLimits = JSONLimits()) throws(JSONParseError) -> JSONValue {
        try parse(Data(text.utf8), limits: limits)
    }
}

private struct JSONParser {
    /// Where the parser is, kept as components and spelled out (`jobs[0].payload`) only for an error.
    enum Step {
        case key(String)
        case index(Int)
    }

    let bytes: [UInt8]
    let limits: JSONLimits
    var index = 0
    var depth = 0
    var path: [Step] = []

    init(bytes: [UInt8], limits: JSONLimits) {
        self.bytes = bytes
        self.limits = limits
    }

    /// `jobs[0].payload.x`, at most eight steps; nil at the top of the document.
    var location: String? {
        guard !path.isEmpty else { return nil }
        var text = ""
        for step in path.prefix(8) {
            switch step {
            case .key(let key): text += text.isEmpty ? key : "." + key
            case .index(let position): text += "[\(position)]"
            }
        }
        return path.count > 8 ? text + "…" : text
    }

    mutating func parseDocument() throws(JSONParseError) -> JSONValue {
        if limits.byteOrderMark, bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { index = 3 }
        skipWhitespace()
        guard index < bytes.count else { throw failure("the document is empty") }
        let value = try parseValue()
        skipWhitespace()
        guard index == bytes.count else { throw failure("unexpected text after the JSON value") }
        return value
    }

    func failure(_ reason: String) -> JSONParseError {
        var line = 1
        var column = 1
        var i = 0
        let end = min(index, bytes.count)
        while i < end {
            if bytes[i] == 0x0A {
                line += 1
                column = 1
            } else if bytes[i] & 0xC0 != 0x80 {
                column += 1
            }
            i += 1
        }
        return JSONParseError(reason: reason, line: line, column: column)
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    mutating func parseValue() throws(JSONParseError) -> JSONValue {
        guard index < bytes.count else { throw failure("the document ends where a value was expected") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        case UInt8(ascii: "N") where limits.workflowQuirks && matches("NaN"):
            // Python's json.dumps writes NaN and Infinity; ComfyUI workflows saved by scripts contain them.
            index += 3
            return .number(.nan)
        case UInt8(ascii: "I") where limits.workflowQuirks && matches("Infinity"):
            index += 8
            return .number(.infinity)
        default:
            let found = bytes[index] < 0x80 && bytes[index] >= 0x20
                ? "unexpected character '\(Character(UnicodeScalar(bytes[index])))'" : "unexpected byte 0x\(String(bytes[index], radix: 16))"
            throw failure(location.map { "\($0) is not a JSON value (\(found))" } ?? found)
        }
    }

    func matches(_ word: String) -> Bool {
        let utf8 = Array(word.utf8)
        guard index + utf8.count <= bytes.count else { return false }
        return Array(bytes[index..<(index + utf8.count)]) == utf8
    }

    mutating func literal(_ word: String, _ value: JSONValue) throws(JSONParseError) -> JSONValue {
        guard matches(word) else {
            let found = "unexpected character '\(Character(UnicodeScalar(bytes[index])))'"
            throw failure(location.map { "\($0) is not a JSON value (\(found))" } ?? found)
        }
        index += word.utf8.count
        return value
    }

    mutating func enter() throws(JSONParseError) {
        depth += 1
        if depth > limits.maxDepth {
            // Named by the field it happens under; a bare run of brackets has no name worth printing.
            let field = path.contains { if case .key = $0 { return true } else { return false } } ? location : nil
            throw failure("arrays and objects are nested more than \(limits.maxDepth) levels deep" + (field.map { " in \($0)" } ?? ""))
        }
    }

    mutating func parseObject() throws(JSONParseError) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        index += 1
        var fields: [String: JSONValue] = [:]
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(fields)
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw failure(index < bytes.count ? "a field name in quotes was expected" : "the document ends inside an object")
            }
            let key = try parseString()
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw failure("':' was expected after a field name") }
            index += 1
            skipWhitespace()
            path.append(.key(key))
            // A repeated key is refused: readers disagree on which one wins (the queue script's takes the last).
            guard fields[key] == nil else { throw failure("\(location ?? key) is given twice") }
            fields[key] = try parseValue()
            path.removeLast()
            skipWhitespace()
            guard index < bytes.count else { throw failure("the document ends inside an object") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(fields)
            }
            throw failure("',' or '}' was expected in an object")
        }
    }

    mutating func parseArray() throws(JSONParseError) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        index += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            path.append(.index(items.count))
            items.append(try parseValue())
            path.removeLast()
            skipWhitespace()
            guard index < bytes.count else { throw failure("the document ends inside an array") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            throw failure("',' or ']' was expected in an array")
        }
    }

    mutating func parseString() throws(JSONParseError) -> String {
        index += 1
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = try decodeUTF8(bytes[start..<index])
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw failure("a control character inside a string") }
            index += 1
        }
        var buffer = Array(bytes[start..<index])
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return try decodeUTF8(buffer[...])
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw failure("the document ends inside a string") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): buffer.append(0x22)
                case UInt8(ascii: "\\"): buffer.append(0x5C)
                case UInt8(ascii: "/"): buffer.append(0x2F)
                case UInt8(ascii: "b"): buffer.append(0x08)
                case UInt8(ascii: "f"): buffer.append(0x0C)
                case UInt8(ascii: "n"): buffer.append(0x0A)
                case UInt8(ascii: "r"): buffer.append(0x0D)
                case UInt8(ascii: "t"): buffer.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        // A surrogate pair; a lone surrogate becomes U+FFFD in a workflow, else is refused.
                        if index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") {
                            index += 2
                            let low = try hex4()
                            scalar = (0xDC00...0xDFFF).contains(low) ? 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00) : 0xFFFD
                        } else {
                            scalar = 0xFFFD
                        }
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        scalar = 0xFFFD
                    }
                    if scalar == 0xFFFD, !limits.workflowQuirks { throw failure("a string has an unpaired surrogate escape") }
                    buffer.append(contentsOf: Array(String(Character(UnicodeScalar(scalar) ?? "\u{FFFD}")).utf8))
                default:
                    throw failure("an invalid escape '\\\(Character(UnicodeScalar(escape)))' inside a string")
                }
            default:
                if byte < 0x20 { throw failure("a control character inside a string") }
                buffer.append(byte)
                index += 1
            }
        }
        throw failure("the document ends inside a string")
    }

    mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw failure("the document ends inside a \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw failure("an invalid \\u escape inside a string")
            }
            value = value * 16 + digit
            index += 1
        }
        return value
    }

    func decodeUTF8(_ slice: ArraySlice<UInt8>) throws(JSONParseError) -> String {
        guard let text = String(validating: slice, as: UTF8.self) else { throw failure("a string that is not valid UTF-8") }
        return text
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` and nothing glued to it (`0x2`, `012`).
    mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = index
        let shown = location ?? "the document"
        if bytes[index] == UInt8(ascii: "-") {
            index += 1
            if limits.workflowQuirks, matches("Infinity") {
                index += 8
                return .number(-.infinity)
            }
        }
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        let integerStart = index
        while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        guard index > integerStart else { throw failure("\(shown) is not a JSON number (no digits)") }
        if index - integerStart > 1, bytes[integerStart] == UInt8(ascii: "0") {
            throw failure("\(shown) is not a JSON number (a leading zero, as octal is written, is not JSON)")
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            let fractionStart = index
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            guard index > fractionStart else { throw failure("\(shown) is not a JSON number (no digits after '.')") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            let exponentStart = index
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            guard index > exponentStart else { throw failure("\(shown) is not a JSON number (no digits in its exponent)") }
        }
        if index < bytes.count, bytes[index] < 0x80, Character(UnicodeScalar(bytes[index])).isLetter || bytes[index] == UInt8(ascii: ".") {
            throw failure("\(shown) is not a JSON number (hexadecimal, octal and other spellings are not JSON)")
        }
        guard index - start <= 400, let value = Double(String(decoding: bytes[start..<index], as: UTF8.self)),
            value.isFinite || limits.workflowQuirks
        else {
            throw failure("\(shown) is a number that cannot be read or is out of range")
        }
        return .number(value)
    }
}

extension JSONValue: Encodable {
    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 9.007_199_254_740_992e15 {
                try container.encode(Int64(value))
            } else if value.isFinite {
                try container.encode(value)
            } else {
                try container.encodeNil()
            }
        case .string(let value): try container.encode(value)
        case .array(let items): try container.encode(items)
        case .object(let fields): try container.encode(fields)
        }
    }
}
