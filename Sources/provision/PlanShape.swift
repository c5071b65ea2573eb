import Foundation
import JobCore

/// Why a plan is refused before it reaches Redis, naming the field and the problem.
struct PlanShapeError: Error, CustomStringConvertible {
    let description: String
}

/// The plan's shape (protocols/schemas/plan.schema.json) checked on the strict parse (JobCore's
/// JSONValue: RFC 8259 only, so what the queue script's lenient decoder would take — hex numbers,
/// duplicate keys where the last wins, `NaN` — is refused before it); ranges, ids and the graph stay
/// the script's to check.
enum PlanShape {
    static let integerFields = ["max_attempts", "backoff_ms", "backoff_max_ms", "lease_ms", "timeout_ms"]
    static let maxDepth = 64

    static func check(_ data: Data) throws(PlanShapeError) {
        let plan: JSONValue
        do {
            plan = try JSONValue.parse(data, limits: JSONLimits(maxBytes: max(data.count, 1), maxDepth: maxDepth, byteOrderMark: false))
        } catch {
            throw PlanShapeError(description: error.description)
        }
        guard case .object = plan else { throw PlanShapeError(description: "the plan is \(kind(plan)), not an object") }
        try expect(plan["version"], "version", integer: true)
        try expect(plan["plan_id"], "plan_id", string: true)
        if let machine = plan["machine_id"] { try expect(machine, "machine_id", string: true) }
        if let meta = plan["meta"], meta.object == nil {
            throw PlanShapeError(description: "meta must be an object, not \(kind(meta))")
        }
        guard let jobs = plan["jobs"] else { throw PlanShapeError(description: "jobs is missing") }
        guard let list = jobs.array else { throw PlanShapeError(description: "jobs must be an array, not \(kind(jobs))") }
        for (index, job) in list.enumerated() {
            let at = "jobs[\(index)]"
            guard job.object != nil else { throw PlanShapeError(description: "\(at) must be an object, not \(kind(job))") }
            try expect(job["id"], "\(at).id", string: true)
            try expect(job["kind"], "\(at).kind", string: true)
            if let payload = job["payload"], payload.object == nil {
                throw PlanShapeError(description: "\(at).payload must be an object, not \(kind(payload))")
            }
            if let label = job["label"] { try expect(label, "\(at).label", string: true) }
            if let dependencies = job["depends_on"] {
                guard let ids = dependencies.array else {
                    throw PlanShapeError(description: "\(at).depends_on must be an array of job ids, not \(kind(dependencies))")
                }
                for (position, id) in ids.enumerated() { try expect(id, "\(at).depends_on[\(position)]", string: true) }
            }
            for field in integerFields {
                if let value = job[field] { try expect(value, "\(at).\(field)", integer: true) }
            }
        }
    }

    /// "an integer" for a whole number, else the value's kind ("a string", "a number", …).
    static func kind(_ value: JSONValue) -> String {
        if let number = value.number, number.rounded() == number { return "an integer" }
        return value.kindDescription
    }

    private static func expect(_ value: JSONValue?, _ field: String, string: Bool = false, integer: Bool = false) throws(PlanShapeError) {
        guard let value else { throw PlanShapeError(description: "\(field) is missing") }
        if string, value.string == nil { throw PlanShapeError(description: "\(field) must be a string, not \(kind(value))") }
        if integer {
            guard let number = value.number, number.rounded() == number else {
                throw PlanShapeError(description: "\(field) must be an integer, not \(kind(value))")
            }
        }
    }
}
