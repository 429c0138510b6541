// What `fieldsync status` shows: the daemon's status file (peers, last sync with each; written atomically
// by the running daemon) and a report read from the store (frontiers, held back, what HQ has receipted).

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's status file (JSON), rewritten atomically (temporary file + rename) when something changes.
public struct DaemonStatus: Codable, Sendable, Equatable {
    /// One peer as the daemon sees it.
    public struct Peer: Codable, Sendable, Equatable {
        /// `HOST:PORT` for peers this node connects to; the socket address for incoming-only peers.
        public var address: String
        /// `static`, `discovered`, or `incoming` (a peer that connected to this node).
        public var source: String
        /// Its device id and role, once authenticated.
        public var device: String?
        public var role: String?
        /// Last time it was added, discovered or connected (ms since the Unix epoch).
        public var lastSeen: UInt64
        /// End of the last session with it (ms), its outcome (`finished`/`failed`) and the error.
        public var lastSyncAt: UInt64?
        public var lastOutcome: String?
        public var lastError: String?
        /// Changes sent to and received from it over the daemon's lifetime.
        public var changesSent = 0, changesReceived = 0
        /// Consecutive failures and the next attempt (ms), for peers this node connects to.
        public var failures = 0
        public var nextAttemptAt: UInt64?
        /// Since when a live session with it is open (ms since the Unix epoch), nil if none.
        public var liveSince: UInt64?
        /// Pushes that sent it changes on that live session.
        public var livePushes: Int?
        /// This node's changes it applied but did not store (`ack-refused`: a full relay, ...) over the
        /// daemon's lifetime, by reason (`quota`, `heldBack`, `timestampInFuture`, `revoked`, `forked`); nil if none.
        public var refusedByPeer: [String: Int]?
    }

    /// Process id of the daemon.
    public var pid: Int32
    /// This device, its role, and the listening address.
    public var device: String
    public var role: String
    public var listen: String
    /// `running`, `stopping` or `stopped`.
    public var state: String
    /// When the daemon started and when this file was written (ms since the Unix epoch).
    public var startedAt: UInt64
    public var updatedAt: UInt64
    /// Sessions running when written (live ones included).
    public var sessionsActive: Int
    /// Sessions in their live phase when written (nil in files of daemons before live sessions).
    public var sessionsLive: Int?
    /// Incoming connections in their handshake when written (the unauthenticated pool).
    public var handshakesPending: Int?
    /// Connections refused and cut since the daemon started, by reason.
    public var connections: ConnectionCounters?
    /// Peers, sorted by address.
    public var peers: [Peer]
    /// Changes of the store found corrupt on disk and quarantined, not yet received again from a peer
    /// (nil in files of daemons before quarantine; `fieldsync doctor` lists them).
    public var quarantinedChanges: Int?
    /// Changes the store refused since the daemon started (relay quota full, held-back limit): the senders keep
    /// them and offer them again (nil in files of daemons before the count).
    public var changesRefused: Int? = nil
    /// This node's changes that peers applied but did not store since the daemon started, by reason (a full
    /// relay: `quota`); this node keeps them and offers them again. Nil if none (or a daemon before the count).
    public var refusedByPeers: [String: Int]? = nil
    /// The PostgreSQL feed of this node (`docs/postgres-feed.md`), nil on a node without one (and in files of
    /// daemons before the section).
    public var feed: Feed? = nil

    /// The feed as the status file shows it: what `fieldsync feed status` says of the running feed, without
    /// asking the database.
    public struct Feed: Codable, Sendable, Equatable {
        /// Where it writes: `URL schema NAME` (the URL holds no password).
        public var target: String
        /// `starting`, `feeding`, `caught-up`, `retrying` (the database did not take the last batch) or `stopped`.
        public var state: String
        /// `up` (the last batch or check went through), `down` (the last attempt failed: `lastError`), or
        /// `unknown` (no attempt yet).
        public var database: String
        /// Changes in the store not fed yet; nil while unknown (the database, which holds the cursor, has not
        /// answered since the daemon started).
        public var lagChanges: Int64?
        /// Seconds since the feed was last caught up (0 when it is).
        public var lagSeconds: Int64
        /// The last failure, and when the next attempt is (ms since the Unix epoch); nil after a success.
        public var lastError: String?
        public var retryAt: UInt64?
        /// Changes fed since the daemon started.
        public var changesFed: Int64

        /// A section.
        public init(target: String, state: String, database: String, lagChanges: Int64?, lagSeconds: Int64, lastError: String?,
                    retryAt: UInt64?, changesFed: Int64) {
            self.target = target; self.state = state; self.database = database; self.lagChanges = lagChanges
            self.lagSeconds = lagSeconds; self.lastError = lastError; self.retryAt = retryAt; self.changesFed = changesFed
        }
    }

    /// Writes `status` to `path` atomically (a reader sees the old or the new file, never half of one).
    /// - Throws: `NodeError` if the folder is not writable.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        // Mode 0600 like the store it describes (peers' addresses and ids), written to a temporary file
        // and renamed over the old one.
        let tmp = path + ".tmp-\(getpid())"
        unlink(tmp)
        guard FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw NodeError("cannot write the status file \(path): cannot create \(tmp); check `statusFile`")
        }
        guard rename(tmp, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(tmp)
            throw NodeError("cannot write the status file \(path): \(why); check `statusFile`")
        }
    }

    /// Reads a status file.
    /// - Throws: `NodeError` if missing or malformed.
    public static func read(from path: String) throws -> DaemonStatus {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NodeError("no status file at \(path): is `fieldsync serve` running with this config?")
        }
        do { return try JSONDecoder().decode(DaemonStatus.self, from: data) } catch {
            throw NodeError("\(path) is not a FieldSync status file: \(error)")
        }
    }
}

/// What the store says about sync progress: heads per log, changes held back, and this node's own logs
/// with how far HQ has receipted them.
public struct StoreReport: Sendable, Equatable {
    /// One log's frontier.
    public struct Log: Sendable, Equatable {
        /// The log.
        public var log: LogID
        /// Highest seq held contiguously from 1.
        public var frontier: UInt64
        /// Changes held beyond a gap (waiting for the missing ones).
        public var heldBack: UInt64
        /// Highest seq HQ has receipted (0 if none).
        public var receipted: UInt64
        /// Whether this node authored it.
        public var own: Bool
    }

    /// Every log, sorted.
    public var logs: [Log]
    /// Store counters (changes, bytes, held back, records, quota).
    public var store: StoreStatus

    /// This node's own changes HQ has not receipted yet.
    public var pendingToHQ: UInt64 { logs.filter(\.own).reduce(0) { $0 + ($1.frontier > $1.receipted ? $1.frontier - $1.receipted : 0) } }

    /// Reads the report from a replicator's store (on the thread that owns it).
    /// - Throws: store errors.
    public static func read(_ replicator: Replicator) throws -> StoreReport {
        let me = replicator.identity.id
        var logs: [Log] = []
        for (log, iv) in try replicator.store.holdings().sorted(by: { $0.key < $1.key }) {
            logs.append(Log(log: log, frontier: iv.frontier, heldBack: iv.heldBack, receipted: try replicator.store.receipted(log),
                            own: log.author == me))
        }
        return StoreReport(logs: logs, store: try replicator.store.status())
    }
}

/// One record this node wrote to, and whether HQ holds all of this node's changes to it.
public struct OwnRecordReceipt: Sendable, Equatable {
    /// The record.
    public var id: RecordID
    /// Its kind and scope.
    public var kind: RecordKind
    public var scope: Scope
    /// This node's changes that touched it, and how many of them HQ has receipted.
    public var ownChanges: Int
    public var receipted: Int

    /// Whether HQ holds every change this node made to the record.
    public var reachedHQ: Bool { receipted == ownChanges }

    /// The records this node's own changes touched, newest event first, each with its receipt state.
    /// One history query per record: meant for a device's own records (hundreds), not an archive.
    /// - Throws: store errors.
    public static func read(_ replicator: Replicator, limit: Int? = nil) throws -> [OwnRecordReceipt] {
        let me = replicator.identity.id
        var receiptedUpTo: [LogID: UInt64] = [:]
        var out: [OwnRecordReceipt] = []
        for record in try replicator.store.records(RecordQuery(includeDeleted: true)) {
            let own = try replicator.store.history(of: record.id).filter { $0.log.author == me }
            guard !own.isEmpty else { continue }
            var done = 0
            for c in own {
                if receiptedUpTo[c.log] == nil { receiptedUpTo[c.log] = try replicator.store.receipted(c.log) }
                if c.seq <= receiptedUpTo[c.log]! { done += 1 }
            }
            out.append(OwnRecordReceipt(id: record.id, kind: record.kind, scope: record.scope, ownChanges: own.count, receipted: done))
            if let limit, out.count >= limit { break }
        }
        return out
    }
}
