import Foundation

/// The node types a custom-node package registers, read from its Python source without running
/// any of it: string keys of dict literals assigned to a `…NODE_CLASS_MAPPINGS` name (or merged
/// into one with `.update({…})` / `|= {…}`), and `NODE_CLASS_MAPPINGS["Name"] = …` assignments.
/// Mappings built by code (loops, imports from other packages) are not seen: a type found this way
/// is certain, a type not found is merely unknown.
package enum NodeClassScanner {
    /// Class names registered in one Python file.
    package static func classNames(inPython source: String) -> Set<String> {
        let text = Array(source.utf8)
        var names = Set<String>()
        let marker = Array("NODE_CLASS_MAPPINGS".utf8)
        var index = 0
        while let found = find(marker, in: text, from: index) {
            index = found + marker.count
            // A longer identifier (NODE_CLASS_MAPPINGS_X) is another name.
            if index < text.count, isIdentifier(text[index]) { continue }
            var cursor = skipSpace(text, index)
            guard cursor < text.count else { break }
            switch text[cursor] {
            case UInt8(ascii: "["):
                cursor = skipSpace(text, cursor + 1)
                if let (key, end) = stringLiteral(text, cursor), skipSpace(text, end) < text.count, text[skipSpace(text, end)] == UInt8(ascii: "]") {
                    names.insert(key)
                }
            case UInt8(ascii: "="):
                guard cursor + 1 < text.count, text[cursor + 1] != UInt8(ascii: "=") else { continue }
                cursor = skipSpace(text, cursor + 1)
                if cursor < text.count, text[cursor] == UInt8(ascii: "{") { names.formUnion(dictKeys(text, cursor)) }
            case UInt8(ascii: "|"):
                guard cursor + 1 < text.count, text[cursor + 1] == UInt8(ascii: "=") else { continue }
                cursor = skipSpace(text, cursor + 2)
                if cursor < text.count, text[cursor] == UInt8(ascii: "{") { names.formUnion(dictKeys(text, cursor)) }
            case UInt8(ascii: "."):
                let update = Array(".update(".utf8)
                guard cursor + update.count <= text.count, Array(text[cursor..<cursor + update.count]) == update else { continue }
                cursor = skipSpace(text, cursor + update.count)
                if cursor < text.count, text[cursor] == UInt8(ascii: "{") { names.formUnion(dictKeys(text, cursor)) }
            default:
                continue
            }
        }
        return names
    }

    /// The string keys at the top level of the dict literal starting at `start` (`{`).
    static func dictKeys(_ text: [UInt8], _ start: Int) -> Set<String> {
        var keys = Set<String>()
        var depth = 0
        var index = start
        var expectKey = true
        let limit = min(text.count, start + (4 << 20))
        while index < limit {
            let byte = text[index]
            if byte == UInt8(ascii: "#") {
                while index < limit, text[index] != UInt8(ascii: "\n") { index += 1 }
                continue
            }
            if let (value, end) = stringLiteral(text, index) {
                let after = skipSpace(text, end)
                if depth == 1, expectKey, after < text.count, text[after] == UInt8(ascii: ":") { keys.insert(value) }
                index = end
                expectKey = false
                continue
            }
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["), UInt8(ascii: "("):
                depth += 1
                if depth == 1 { expectKey = true }
            case UInt8(ascii: "}"), UInt8(ascii: "]"), UInt8(ascii: ")"):
                depth -= 1
                if depth == 0 { return keys }
            case UInt8(ascii: ","):
                if depth == 1 { expectKey = true }
            default:
                if !isSpace(byte) && depth == 1 { expectKey = false }
            }
            index += 1
        }
        return keys
    }

    /// A plain or raw Python string literal at `index` (single, double or triple quoted; not an
    /// f-string, whose value is computed): its value and the index after it.
    static func stringLiteral(_ text: [UInt8], _ index: Int) -> (String, Int)? {
        var cursor = index
        var raw = false
        if cursor < text.count, text[cursor] == UInt8(ascii: "r") || text[cursor] == UInt8(ascii: "R") || text[cursor] == UInt8(ascii: "u") || text[cursor] == UInt8(ascii: "U") {
            raw = text[cursor] == UInt8(ascii: "r") || text[cursor] == UInt8(ascii: "R")
            if index > 0, isIdentifier(text[index - 1]) { return nil }
            cursor += 1
        }
        guard cursor < text.count, text[cursor] == UInt8(ascii: "\"") || text[cursor] == UInt8(ascii: "'") else { return nil }
        if cursor == index, index > 0, isIdentifier(text[index - 1]) { return nil }
        let quote = text[cursor]
        let triple = cursor + 2 < text.count && text[cursor + 1] == quote && text[cursor + 2] == quote
        cursor += triple ? 3 : 1
        var value: [UInt8] = []
        while cursor < text.count {
            let byte = text[cursor]
            if byte == UInt8(ascii: "\\"), !raw, cursor + 1 < text.count {
                let next = text[cursor + 1]
                switch next {
                case UInt8(ascii: "n"): value.append(10)
                case UInt8(ascii: "t"): value.append(9)
                default: value.append(next)
                }
                cursor += 2
                continue
            }
            if byte == quote {
                if !triple { return (String(decoding: value, as: UTF8.self), cursor + 1) }
                if cursor + 2 < text.count, text[cursor + 1] == quote, text[cursor + 2] == quote {
                    return (String(decoding: value, as: UTF8.self), cursor + 3)
                }
            }
            if byte == UInt8(ascii: "\n"), !triple { return nil }
            value.append(byte)
            cursor += 1
        }
        return nil
    }

    private static func find(_ needle: [UInt8], in text: [UInt8], from start: Int) -> Int? {
        guard needle.count <= text.count else { return nil }
        var index = start
        while index + needle.count <= text.count {
            if text[index] == needle[0], Array(text[index..<index + needle.count]) == needle {
                if index == 0 || !isIdentifier(text[index - 1]) || text[index - 1] == UInt8(ascii: "_") { return index }
            }
            index += 1
        }
        return nil
    }

    private static func skipSpace(_ text: [UInt8], _ index: Int) -> Int {
        var cursor = index
        while cursor < text.count, isSpace(text[cursor]) || (text[cursor] == UInt8(ascii: "\\") && cursor + 1 < text.count && text[cursor + 1] == 10) {
            cursor += text[cursor] == UInt8(ascii: "\\") ? 2 : 1
        }
        return cursor
    }

    private static func isSpace(_ byte: UInt8) -> Bool { byte == 32 || byte == 9 || byte == 10 || byte == 13 }

    private static func isIdentifier(_ byte: UInt8) -> Bool {
        (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || byte == 95
    }
}
