import Foundation

/// Converts stored step events into OTLP/JSON (`ExportLogsServiceRequest`, as an OpenTelemetry
/// collector's OTLP/HTTP receiver accepts at `/v1/logs`): one log record per event, the event name
/// as body and `event_name`, every other field as an attribute, and the plan/job ids hashed into
/// W3C-sized trace and span ids (the readable ids stay as `provision.trace_id` / `provision.span_id`).
package enum OTLPLogs {
    /// Attributes that become fields of the log record rather than attributes.
    private static let lifted: Set<String> = ["event", "timestamp", "trace_id", "span_id"]
    /// Attributes of the resource (the machine) rather than of each record.
    private static let resourceFields = ["machine_id", "gpu_mode", "gpu_count", "workers_config"]

    /// One request holding `events` (each a decoded event object), grouped by machine.
    package static func request(events: [[String: EventValue]], serviceVersion: String? = nil) -> String {
        var byMachine: [(key: String, records: [[String: Any]], resource: [[String: Any]])] = []
        var index: [String: Int] = [:]
        for event in events {
            let machine = event["machine_id"]?.string ?? ""
            if index[machine] == nil {
                index[machine] = byMachine.count
                var resource: [[String: Any]] = [keyValue("service.name", "provision")]
                if let serviceVersion { resource.append(keyValue("service.version", serviceVersion)) }
                for field in resourceFields {
                    if let value = event[field], let kv = attribute(field == "machine_id" ? "machine.id" : field, value) {
                        resource.append(kv)
                    }
                }
                byMachine.append((machine, [], resource))
            }
            if let slot = index[machine] { byMachine[slot].records.append(record(event)) }
        }
        let request: [String: Any] = [
            "resourceLogs": byMachine.map { group in
                [
                    "resource": ["attributes": group.resource],
                    "scopeLogs": [["scope": ["name": "provision"], "logRecords": group.records]],
                ] as [String: Any]
            }
        ]
        let data = (try? JSONSerialization.data(withJSONObject: request, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// One log record.
    static func record(_ event: [String: EventValue]) -> [String: Any] {
        let name = event["event"]?.string ?? "machine.event"
        let nanos = event["timestamp"]?.int ?? 0
        let failed = name == EventName.failure
        var record: [String: Any] = [
            "timeUnixNano": String(nanos), "observedTimeUnixNano": String(nanos),
            "severityNumber": failed ? 17 : 9, "severityText": failed ? "ERROR" : "INFO",
            "body": ["stringValue": name], "eventName": name,
        ]
        var attributes: [[String: Any]] = []
        for key in event.keys.sorted() where !lifted.contains(key) && !resourceFields.contains(key) {
            if let value = event[key], let kv = attribute(key, value) { attributes.append(kv) }
        }
        let trace = event["trace_id"]?.string
        let span = event["span_id"]?.string
        if let trace {
            record["traceId"] = traceID(trace)
            attributes.append(keyValue("provision.trace_id", trace))
        }
        if let span {
            if let trace { record["spanId"] = spanID(trace: trace, span: span) }
            attributes.append(keyValue("provision.span_id", span))
        }
        if let parent = event["parent_span_id"]?.string, let trace {
            attributes.append(keyValue("provision.parent_span_id_hex", spanID(trace: trace, span: parent)))
        }
        record["attributes"] = attributes
        return record
    }

    private static func keyValue(_ key: String, _ value: String) -> [String: Any] {
        ["key": key, "value": ["stringValue": value]]
    }

    /// An OTLP `KeyValue`; int64 values are written as strings (the protobuf JSON mapping).
    private static func attribute(_ key: String, _ value: EventValue) -> [String: Any]? {
        switch value {
        case .string(let string): return ["key": key, "value": ["stringValue": string]]
        case .int(let int): return ["key": key, "value": ["intValue": String(int)]]
        case .double(let double): return ["key": key, "value": ["doubleValue": double]]
        case .bool(let bool): return ["key": key, "value": ["boolValue": bool]]
        }
    }

    /// A 16-byte trace id (32 hex digits) derived from a plan id.
    package static func traceID(_ plan: String) -> String {
        hex(fnv1a(plan, seed: 0xcbf2_9ce4_8422_2325)) + hex(fnv1a(plan, seed: 0x6c62_272e_07bb_0142))
    }

    /// An 8-byte span id (16 hex digits) derived from a plan id and a span name.
    package static func spanID(trace: String, span: String) -> String {
        hex(fnv1a(trace + "\u{0}" + span, seed: 0xcbf2_9ce4_8422_2325))
    }

    private static func fnv1a(_ text: String, seed: UInt64) -> UInt64 {
        var hash = seed
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash == 0 ? 1 : hash
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
