import Foundation

/// A value of an event attribute: the JSON scalar types.
package enum EventValue: Sendable, Equatable, Codable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let bool = try? container.decode(Bool.self) {
            self = .bool(bool)
        } else if let int = try? container.decode(Int64.self) {
            self = .int(int)
        } else if let double = try? container.decode(Double.self) {
            self = .double(double)
        } else {
            self = .string(try container.decode(String.self))
        }
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let s): try container.encode(s)
        case .int(let i): try container.encode(i)
        case .double(let d): try container.encode(d)
        case .bool(let b): try container.encode(b)
        }
    }

    package var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    package var int: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d == d.rounded() && abs(d) < 9e18: return Int64(d)
        default: return nil
        }
    }

    package var double: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
}

extension StepEvent {
    /// Decodes one stored event (a flat JSON object); `null` attributes are left out.
    package static func decode(_ json: String) -> [String: EventValue]? {
        guard let object = try? JSONDecoder().decode([String: EventValue?].self, from: Data(json.utf8)) else { return nil }
        return object.compactMapValues { $0 }
    }
}

/// One step event (protocols/events.md): a name, its step, trace and span ids, and attributes.
/// The machine-wide attributes (machine id, GPU mode, workers) are added when it is encoded.
package struct StepEvent: Sendable {
    package var name: String
    package var step: Step
    /// Nanoseconds since the Unix epoch, from this host's clock.
    package var timestamp: Int64
    /// The plan id; nil for events outside any plan (a worker connecting before a plan exists).
    package var traceID: String?
    /// The job id for job events, else a `step/N…` id.
    package var spanID: String
    package var parentSpanID: String?
    /// Set on events that end something (`.complete`, failures).
    package var durationMilliseconds: Double?
    /// Further attributes, in the order they are written.
    package var attributes: [(key: String, value: EventValue)]

    package init(
        name: String, step: Step, timestamp: Int64 = StepEvent.now(), traceID: String?, spanID: String,
        parentSpanID: String?, durationMilliseconds: Double? = nil, attributes: [(key: String, value: EventValue)] = []
    ) {
        self.name = name
        self.step = step
        self.timestamp = timestamp
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.durationMilliseconds = durationMilliseconds
        self.attributes = attributes
    }

    /// Nanoseconds since the Unix epoch.
    package static func now() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }

    /// The event as one flat JSON object (protocols/schemas/event.schema.json).
    package func json(context: EventContext) -> String {
        json(fixed: Self.fixedFields(step: step, context: context))
    }

    /// The fields that only depend on the step and the machine (`machine_id` … `workers_config`),
    /// encoded once: a publisher caches them per step.
    package static func fixedFields(step: Step, context: EventContext) -> String {
        var out = JSONObjectWriter(capacity: 256)
        out.add("machine_id", context.machineID)
        out.add("step_number", Int64(step.number))
        out.add("step_name", step.name)
        out.add("phase", step.phase)
        out.add("gpu_mode", context.gpuMode)
        if let count = context.gpuCount { out.add("gpu_count", Int64(count)) }
        out.add("workers_config", context.workersConfig)
        let text = out.finish()
        return String(text.dropFirst().dropLast())
    }

    /// The event as JSON, with its fixed fields already encoded by `fixedFields`.
    package func json(fixed: String) -> String {
        var out = JSONObjectWriter(capacity: 512)
        out.add("event", name)
        out.add("timestamp", timestamp)
        out.appendFields(fixed)
        out.add("trace_id", traceID)
        out.add("span_id", spanID)
        out.add("parent_span_id", parentSpanID)
        if let durationMilliseconds { out.add("duration_ms", durationMilliseconds) }
        for (key, value) in attributes { out.add(key, value) }
        return out.finish()
    }
}

/// An object key encoded once (`"name":`), for the keys every job event writes.
package struct JSONKey: Sendable {
    let encoded: [UInt8]

    /// `name` must not need escaping (plain ASCII names).
    package init(_ name: String) {
        encoded = Array("\"\(name)\":".utf8)
    }

    static let null: [UInt8] = Array("null".utf8)

    package static let event = JSONKey("event")
    package static let timestamp = JSONKey("timestamp")
    package static let traceID = JSONKey("trace_id")
    package static let spanID = JSONKey("span_id")
    package static let parentSpanID = JSONKey("parent_span_id")
    package static let durationMilliseconds = JSONKey("duration_ms")
    package static let jobID = JSONKey("job_id")
    package static let jobKind = JSONKey("job_kind")
    package static let component = JSONKey("component")
    package static let attempt = JSONKey("attempt")
    package static let maxAttempts = JSONKey("max_attempts")
    package static let generation = JSONKey("generation")
    package static let workerID = JSONKey("worker_id")
}

/// Writes one JSON object by hand, into bytes: the hot path encodes thousands of events a second,
/// and this is an order of magnitude cheaper than JSONSerialization or String appends. Keys are
/// written as given (callers use plain ASCII names); string values are escaped.
package struct JSONObjectWriter: Sendable {
    private var bytes: [UInt8]
    private var empty = true

    package init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    private mutating func key(_ key: JSONKey) {
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        bytes.append(contentsOf: key.encoded)
    }

    package mutating func add(_ key: JSONKey, _ value: String?) {
        self.key(key)
        appendString(value)
    }

    package mutating func add(_ key: JSONKey, _ value: Int64) {
        self.key(key)
        JSONObjectWriter.digits(value, into: &bytes)
    }

    package mutating func add(_ key: JSONKey, _ value: Double) {
        self.key(key)
        JSONObjectWriter.number(value, into: &bytes)
    }

    private mutating func appendString(_ value: String?) {
        guard let value else {
            bytes.append(contentsOf: JSONKey.null)
            return
        }
        bytes.append(UInt8(ascii: "\""))
        JSONObjectWriter.escape(value, into: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func key(_ name: String) {
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        bytes.append(UInt8(ascii: "\""))
        appendUTF8(name)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    private mutating func appendUTF8(_ text: String) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
    }

    package mutating func add(_ name: String, _ value: String?) {
        key(name)
        appendString(value)
    }

    package mutating func add(_ name: String, _ value: Int64) {
        key(name)
        JSONObjectWriter.digits(value, into: &bytes)
    }

    package mutating func add(_ name: String, _ value: Double) {
        key(name)
        JSONObjectWriter.number(value, into: &bytes)
    }

    package mutating func add(_ name: String, _ value: Bool) {
        key(name)
        appendUTF8(value ? "true" : "false")
    }

    package mutating func add(_ name: String, _ value: EventValue) {
        switch value {
        case .string(let s): add(name, s)
        case .int(let i): add(name, i)
        case .double(let d): add(name, d)
        case .bool(let b): add(name, b)
        }
    }

    /// Adds `"key":value` pairs that are already encoded, comma-separated.
    package mutating func appendFields(_ fields: String) {
        guard !fields.isEmpty else { return }
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        appendUTF8(fields)
    }

    /// Adds JSON text that is already encoded (an array or object).
    package mutating func addRaw(_ name: String, _ json: String) {
        key(name)
        appendUTF8(json)
    }

    package mutating func finish() -> String {
        String(decoding: finishBytes(), as: UTF8.self)
    }

    /// The object's UTF-8 bytes (the event path hands them to Redis without making a String).
    package mutating func finishBytes() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }

    /// A finite JSON number: integers without a fraction, others with up to 3 decimals; NaN and
    /// infinities (which JSON cannot hold) become 0.
    package static func number(_ value: Double) -> String {
        var out: [UInt8] = []
        number(value, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `number(value)`'s digits, with no allocation (Foundation's formatter and String
    /// descriptions are slow on the hot path).
    static func number(_ value: Double, into out: inout [UInt8]) {
        guard value.isFinite else {
            out.append(UInt8(ascii: "0"))
            return
        }
        if value == value.rounded(), abs(value) < 1e15 { return digits(Int64(value), into: &out) }
        guard abs(value) < 1e12 else { return digits(Int64(value.rounded()), into: &out) }
        let thousandths = Int64((abs(value) * 1000).rounded())
        if value < 0 && thousandths > 0 { out.append(UInt8(ascii: "-")) }
        digits(thousandths / 1000, into: &out)
        var fraction = thousandths % 1000
        guard fraction != 0 else { return }
        out.append(UInt8(ascii: "."))
        var width = 3
        while fraction % 10 == 0 {
            fraction /= 10
            width -= 1
        }
        var divisor: Int64 = width == 3 ? 100 : width == 2 ? 10 : 1
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8(fraction / divisor % 10))
            divisor /= 10
        }
    }

    /// Appends the decimal digits of `value`, with no allocation.
    static func digits(_ value: Int64, into out: inout [UInt8]) {
        if value == 0 {
            out.append(UInt8(ascii: "0"))
            return
        }
        var magnitude = value.magnitude
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: enough for 20 digits
        var count = 0
        withUnsafeMutableBytes(of: &scratch) { buffer in
            while magnitude > 0 {
                buffer[23 - count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            }
            out.append(contentsOf: buffer[(24 - count)...])
        }
    }

    /// Appends `value` with JSON string escaping (quotes, backslashes and control characters).
    package static func escape(_ value: String, into out: inout [UInt8]) {
        var value = value
        value.withUTF8 { source in
            var clean = true
            for byte in source where byte < 0x20 || byte == 0x22 || byte == 0x5C {
                clean = false
                break
            }
            if clean {
                out.append(contentsOf: source)
                return
            }
            let hex: [UInt8] = Array("0123456789abcdef".utf8)
            for byte in source {
                switch byte {
                case 0x22: out.append(contentsOf: [0x5C, 0x22])
                case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case ..<0x20:
                    out.append(contentsOf: [0x5C, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
                default: out.append(byte)
                }
            }
        }
    }

    /// Appends `value` with JSON string escaping to text.
    package static func escape(_ value: String, into out: inout String) {
        var bytes: [UInt8] = []
        escape(value, into: &bytes)
        out.append(String(decoding: bytes, as: UTF8.self))
    }
}
