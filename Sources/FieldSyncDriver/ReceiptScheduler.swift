// When HQ writes receipts (docs/node.md "Roles"): after a session that brought changes, and shortly
// after changes arrive on a live session (a burst gives one receipt, not one per batch); optionally no
// more often than a minimum interval per key (the simulator's `receiptInterval`, per station). Whether
// a receipt is needed at all is `ReceiptScheduler.scopeToReceipt`, read from the replicator.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol

/// HQ's receipt timing.
public struct ReceiptPolicy: Sendable, Equatable {
    /// Changes arriving on a live session are receipted this long after the first of a burst (ms).
    public var debounce: UInt64 = 250
    /// At most one receipt per key this often (ms; 0: no limit). The node uses 0.
    public var minInterval: UInt64 = 0

    /// The node's policy.
    public init() {}
}

/// What to do about receipts now.
public enum ReceiptDecision: Sendable, Equatable {
    /// Nothing.
    case none
    /// Write the receipt now; `received` changes came in since the last one (for the log line).
    case write(received: Int)
    /// Call `timerFired` at this time (ms).
    case armTimer(at: UInt64)
}

/// When HQ writes receipts, per key (the node: one key, its widest scope; the simulator: one per station).
///
/// ```swift
/// var r = ReceiptScheduler<Int>(policy: ReceiptPolicy())
/// r.sessionEnded(0, received: 3, now: 1_000)      // .write(received: 3)
/// r.liveChanges(0, received: 1, now: 2_000)       // .armTimer(at: 2_250)
/// r.timerFired(0, now: 2_250)                     // .write(received: 1)
/// ```
public struct ReceiptScheduler<Key: Hashable & Sendable>: Sendable {
    /// The timing.
    public let policy: ReceiptPolicy
    private var waiting: [Key: Int] = [:]
    private var timerAt: [Key: UInt64] = [:]
    private var lastWritten: [Key: UInt64] = [:]

    /// Creates the scheduler.
    public init(policy: ReceiptPolicy) { self.policy = policy }

    private func allowedAt(_ key: Key) -> UInt64 {
        guard policy.minInterval > 0, let last = lastWritten[key] else { return 0 }
        return last &+ policy.minInterval
    }

    /// A session ended having received `received` changes (any phase): write now, even with a live burst's
    /// timer pending (unless a minimum interval is set: then the pending timer, or one armed for when the
    /// interval has passed, writes it).
    public mutating func sessionEnded(_ key: Key, received: Int, now: UInt64) -> ReceiptDecision {
        guard received > 0 else { return .none }
        let at = allowedAt(key)
        if at <= now, timerAt[key] == nil || policy.minInterval == 0 {
            lastWritten[key] = now
            return .write(received: received)
        }
        return wait(key, received, at: max(at, now))
    }

    /// Changes arrived on a live session: receipt `debounce` after the first of a burst (and not before
    /// the minimum interval has passed); later ones ride along.
    public mutating func liveChanges(_ key: Key, received: Int, now: UInt64) -> ReceiptDecision {
        guard received > 0 else { return .none }
        return wait(key, received, at: max(now &+ policy.debounce, allowedAt(key)))
    }

    private mutating func wait(_ key: Key, _ received: Int, at: UInt64) -> ReceiptDecision {
        waiting[key, default: 0] += received
        guard timerAt[key] == nil else { return .none }
        timerAt[key] = at
        return .armTimer(at: at)
    }

    /// A timer armed for `key` fired: write if it is due (a timer of an earlier arming is ignored).
    public mutating func timerFired(_ key: Key, now: UInt64) -> ReceiptDecision {
        guard let at = timerAt[key], at <= now else { return .none }
        timerAt[key] = nil
        let n = waiting.removeValue(forKey: key) ?? 0
        lastWritten[key] = now
        return .write(received: n)
    }

    /// Whether a receipt is waiting for its timer.
    public func isWaiting(_ key: Key) -> Bool { timerAt[key] != nil }

    /// The scope HQ writes its receipts in (its widest), if `replicator` is HQ and holds some log of a
    /// non-HQ author beyond what HQ receipted; nil otherwise (not HQ, or nothing to receipt: two HQ
    /// devices would otherwise answer each other's receipts with receipts forever).
    public static func scopeToReceipt(_ replicator: Replicator) throws -> Scope? {
        let cert = replicator.identity.certificate
        guard cert.role == .hq, let scope = cert.scopes.min(by: { $0.path.count < $1.path.count }) else { return nil }
        let store = replicator.store
        let behind = try store.holdings().contains { log, held in
            guard replicator.certificates[log.author]?.certificate.role != .hq else { return false }
            return held.frontier > (try store.receipted(log))
        }
        return behind ? scope : nil
    }
}
