import Foundation
import JobQueue
import Logging
import RedisClient
import Scheduler
import Telemetry

/// Announces a machine's flip to the fleet, exactly once per generation in the fleet stream
/// (protocols/events.md §5): the worker whose call flipped the machine announces at once; every
/// process running a `watch` re-announces a generation whose announcer died between the flip and the
/// announcement. Steps: claim (`queue.lua announce`), fleet entry and PUBLISH (`fleet.lua`, which
/// skips a generation already in the stream), then `queue.lua announced`, which marks it done and
/// appends `machine.ready.complete` (or the step-21 failure) to the machine's event stream.
package final class FlipAnnouncer: WorkerObserver {
    /// Timing of the announcement and its recovery.
    package struct Configuration: Sendable {
        /// How long a process that did not flip leaves the flipper before announcing itself.
        package var graceMilliseconds = 2_000
        /// How old a claim must be before another process takes it over (its announcer died).
        package var takeoverMilliseconds = 10_000
        /// How often `watch` checks for a flip nobody announced (one HMGET: an idle machine's cost).
        package var recheckInterval: Duration = .seconds(5)
        /// The wait after a look found the flip announced: an idle machine (most of a fleet) asks
        /// Redis six times less often, and a plan enqueued meanwhile is seen at the next look.
        package var settledRecheckInterval: Duration = .seconds(30)
        /// `MAXLEN ~` of the fleet stream.
        package var fleetMaxLength = 100_000
        /// A pause before the machine's step-21 event, so that other workers' buffered events of the
        /// plan land in the stream before it.
        package var settle: Duration = .milliseconds(60)

        package init() {}
    }

    /// What one attempt to announce did.
    package enum Outcome: Sendable, Equatable {
        /// Published (`duplicate` when the fleet stream already had it: a takeover after a late death).
        case announced(FleetAnnouncement, duplicate: Bool)
        case nothingToAnnounce, alreadyAnnounced, notYet, otherAnnouncer
        /// The claim was lost before it was marked done (taken over, or a new plan).
        case lost
    }

    package let configuration: Configuration
    private let queue: JobQueue
    private let publisher: EventPublisher?
    private let context: EventContext
    private let redactor: Redactor
    private let claimantPrefix: String
    private let logger: Logger

    /// `redis` should be a connection of its own. `publisher` (when events are on) is flushed before
    /// the announcement and gives the step-21 event its machine attributes.
    package init(
        redis: RedisClient, keys: MachineKeys, publisher: EventPublisher?, context: EventContext,
        redactor: Redactor = Redactor(environment: [:]), claimant: String, configuration: Configuration = Configuration(),
        logger: Logger
    ) throws(JobQueueError) {
        self.queue = try JobQueue(redis: redis, machine: keys.machine, prefix: keys.prefix)
        self.publisher = publisher
        self.context = context
        self.redactor = redactor
        self.claimantPrefix = claimant
        self.configuration = configuration
        self.logger = logger
    }

    package func machineFlipped(_ flip: MachineFlip, job: ClaimedJob?) async {
        _ = await announce(flipper: true)
    }

    /// Re-announces unannounced flips every `recheckInterval` (every `settledRecheckInterval` once
    /// the flip was announced) until the surrounding task is cancelled.
    package func watch() async {
        var wait = configuration.recheckInterval
        while !Task.isCancelled {
            try? await Task.sleep(for: wait)
            if Task.isCancelled { break }
            wait = configuration.recheckInterval
            do {
                let fields = try await queue.redis.send("HMGET", queue.keys.status, "state", "announced").array ?? []
                let state = fields.first?.string
                let announced = fields.count > 1 ? fields[1].string : nil
                if announced == "1" { wait = max(configuration.recheckInterval, configuration.settledRecheckInterval) }
                guard state == "ready" || state == "failed", announced != "1" else { continue }
            } catch {
                continue
            }
            let outcome = await announce(flipper: false)
            if case .announced(let announcement, _) = outcome {
                logger.notice(
                    "announced a flip whose announcer had not", metadata: ["generation": "\(announcement.generation)", "type": "\(announcement.type.rawValue)"])
            }
        }
    }

    /// One attempt: claim, publish fleet-wide, mark announced with the machine's step-21 event.
    package func announce(flipper: Bool) async -> Outcome {
        let claimant = "\(claimantPrefix)-\(String(UInt64.random(in: 0...UInt64.max), radix: 36))"
        do {
            await publisher?.flush()
            let claim = try await queue.announce(
                claimant: claimant, graceMilliseconds: flipper ? 0 : configuration.graceMilliseconds,
                takeoverMilliseconds: configuration.takeoverMilliseconds)
            let announcement: FleetAnnouncement
            switch claim {
            case .none: return .nothingToAnnounce
            case .done: return .alreadyAnnounced
            case .wait: return .notYet
            case .busy: return .otherAnnouncer
            case .claimed(let generation, let tookOver, let status, let failures):
                announcement = FleetAnnouncement(
                    machineID: queue.keys.machine, generation: generation, status: status, failures: failures,
                    claimant: claimant, tookOver: tookOver)
            }
            let message = redactor.scrub(announcement.json)
            var retention = FleetStream.Retention()
            retention.maxLength = configuration.fleetMaxLength
            let (_, duplicate) = try await FleetStream(redis: queue.redis, keys: queue.keys).announce(
                generation: announcement.generation, planID: announcement.planID, message: message,
                fields: [
                    ("type", announcement.type.rawValue), ("machine_id", announcement.machineID),
                    ("plan_id", announcement.planID), ("generation", String(announcement.generation)), ("data", message),
                ], retention: retention)
            if publisher != nil { try? await Task.sleep(for: configuration.settle) }
            await publisher?.flush()
            // With events off, the generation is marked announced and nothing goes to B:events.
            let event = publisher == nil ? "" : redactor.scrub(stepEvent(announcement).json(context: context))
            let marked = try await queue.announced(
                claimant: claimant, eventJSON: event, eventsMaxLength: publisher?.configuration.maxLength ?? 10_000)
            guard marked else { return .lost }
            logger.info(
                "announced to the fleet",
                metadata: ["type": "\(announcement.type.rawValue)", "generation": "\(announcement.generation)", "duplicate": "\(duplicate)"])
            return .announced(announcement, duplicate: duplicate)
        } catch {
            // Another process takes the claim over once it is old enough.
            logger.error("could not announce the machine's flip", metadata: ["error": "\(error)"])
            return .lost
        }
    }

    /// `machine.ready.complete` for a ready machine, `machine.step.failure` (step 21) for a failed one.
    func stepEvent(_ announcement: FleetAnnouncement) -> StepEvent {
        let step = Step.machineReady
        var attributes: [(key: String, value: EventValue)] = [
            ("generation", .int(Int64(announcement.generation))),
            ("jobs_total", .int(Int64(announcement.counts["total"] ?? 0))),
            ("jobs_succeeded", .int(Int64(announcement.counts["succeeded"] ?? 0))),
            ("retries", .int(Int64(announcement.counts["retries"] ?? 0))),
            ("announce_id", .string(announcement.announceID)),
        ]
        if let queued = announcement.durations.queuedMs { attributes.append(("queued_ms", .int(Int64(queued)))) }
        let name: String
        if announcement.type == .machineReady {
            name = step.event
        } else {
            name = EventName.failure
            let first = announcement.reasons.first
            let summary = announcement.reasons.prefix(5).map { "\($0.job): \($0.errorType): \($0.error)" }.joined(separator: "; ")
            attributes += [
                ("error_type", .string(first?.errorType ?? "machine_failed")),
                ("error_message", .string(summary.isEmpty ? "the machine failed" : String(summary.prefix(2000)))),
                ("retry_attempt", .int(0)), ("failed_jobs", .int(Int64(announcement.reasons.count))),
            ]
        }
        if let finished = announcement.finishedAt { attributes.append(("finished_at_ms", .int(Int64(finished)))) }
        return StepEvent(
            name: name, step: step, traceID: announcement.planID,
            spanID: step.spanID, parentSpanID: nil, durationMilliseconds: Double(announcement.durations.totalMs),
            attributes: attributes)
    }
}
