// The app API: one object an app opens with its device, writes and queries through (on the node's
// loop, where the replicator lives), observes (record changes, local and arriving by sync; sync events),
// and runs background sync with (the node daemon: serve, discovery, peers, live sessions).

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncDriver
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Prometheus

/// A change of a record, as an observer sees it.
public struct RecordChange: Sendable {
    /// Where the edit came from.
    public enum Origin: Sendable, Equatable {
        /// This device wrote it.
        case local
        /// It arrived by sync, authored by this device (nil: a record rebuilt after a revocation).
        case remote(DeviceID?)
    }

    /// The record after the change.
    public var record: Record
    /// Where the last edit merged came from.
    public var origin: Origin
}

/// What the node's sync does, as an observer sees it.
public enum SyncEvent: Sendable {
    /// Background sync learned a peer: LAN discovery found it (`.discovered`), or the app added it.
    case peerAdded(PeerAddress, PeerSource)
    /// A session authenticated its peer and started.
    case sessionStarted(SessionStart)
    /// A session went live (it stays open and pushes changes as they are written).
    case liveSessionStarted(LiveSession)
    /// A session ended, with its figures (changes and bytes each way, duration, why it ended).
    case sessionEnded(SessionResult)
    /// This device's own changes HQ has not receipted yet, after a write or a receipt.
    case pendingToHQ(UInt64)
    /// HQ receipts arrived: per log, HQ holds 1...seq.
    case receipts([LogID: UInt64])
    /// Revocations were learned (the number new in one commit).
    case revocationsLearned(Int)
}

/// The observers of one app: continuations by token, under a lock (yielded to from the node's loop).
final class ObserverHub: Sendable {
    private struct State {
        var next = 0
        var records: [Int: (query: RecordQuery?, continuation: AsyncStream<RecordChange>.Continuation)] = [:]
        var events: [Int: AsyncStream<SyncEvent>.Continuation] = [:]
        var finished = false
    }

    private let state = NIOLockedValueBox(State())

    /// Observers registered now (record changes, sync events).
    var counts: (records: Int, events: Int) { state.withLockedValue { ($0.records.count, $0.events.count) } }

    func addRecords(_ query: RecordQuery?, _ continuation: AsyncStream<RecordChange>.Continuation) {
        let token: Int? = state.withLockedValue { s in
            guard !s.finished else { return nil }
            s.next += 1
            s.records[s.next] = (query, continuation)
            return s.next
        }
        guard let token else { return continuation.finish() }
        continuation.onTermination = { [weak self] _ in self?.state.withLockedValue { _ = $0.records.removeValue(forKey: token) } }
    }

    func addEvents(_ continuation: AsyncStream<SyncEvent>.Continuation) {
        let token: Int? = state.withLockedValue { s in
            guard !s.finished else { return nil }
            s.next += 1
            s.events[s.next] = continuation
            return s.next
        }
        guard let token else { return continuation.finish() }
        continuation.onTermination = { [weak self] _ in self?.state.withLockedValue { _ = $0.events.removeValue(forKey: token) } }
    }

    func emit(_ event: SyncEvent) {
        for c in state.withLockedValue({ Array($0.events.values) }) { c.yield(event) }
    }

    /// On the node's loop, after a commit of `replicator`.
    func committed(_ notice: CommitNotice, replicator: Replicator) {
        let (records, events) = state.withLockedValue { s in (Array(s.records.values), Array(s.events.values)) }
        if !records.isEmpty {
            let me = replicator.identity.id
            for (id, author) in notice.records {
                guard let record = try? replicator.store.record(id) else { continue }
                let index = RecordIndexEntry(record, schemas: replicator.schemas)
                let change = RecordChange(record: record, origin: author == me ? .local : .remote(author))
                for (query, c) in records where query?.matches(record, index: index) ?? true { c.yield(change) }
            }
        }
        guard !events.isEmpty else { return }
        if !notice.receipts.isEmpty { for c in events { c.yield(.receipts(notice.receipts)) } }
        if notice.revocationsLearned > 0 { for c in events { c.yield(.revocationsLearned(notice.revocationsLearned)) } }
        let me = replicator.identity.id
        if !notice.receipts.isEmpty || notice.records.contains(where: { $0.author == me }),
           let pending = try? StoreReport.read(replicator).pendingToHQ {
            for c in events { c.yield(.pendingToHQ(pending)) }
        }
    }

    /// Ends every stream (the app closed); later registrations end at once.
    func finishAll() {
        let (records, events) = state.withLockedValue { s -> ([AsyncStream<RecordChange>.Continuation], [AsyncStream<SyncEvent>.Continuation]) in
            s.finished = true
            defer { s.records = [:]; s.events = [:] }
            return (s.records.values.map(\.continuation), Array(s.events.values))
        }
        for c in records { c.finish() }
        for c in events { c.finish() }
    }
}

/// A FieldSync device inside an app: typed writes and queries, observation, and background sync.
///
/// ```swift
/// let app = try await FieldSyncApp.open(device: FieldSyncDevice(directory: "bp17", key: .keyFile(path: "bp17.key"),
///                                                                storePath: "bp17.sqlite"),
///                                       configuration: NodeConfiguration(network: NetworkParameters(networkID: "longnan-police")))
/// let written = try await app.createIncident(draft)
/// for await change in app.recordChanges(matching: .openIncidents(in: station)) { show(change.record) }
/// try await app.startSync(DaemonOptions(listenHost: "0.0.0.0", listenPort: 7000))
/// await app.close()
/// ```
///
/// Every call that touches the store runs on the node's event loop (the replicator's only thread), so
/// the app may call from any task. Errors are `FieldSyncError`, with the messages of the `fieldsync` CLI.
public final class FieldSyncApp: Sendable {
    /// The node (TCP sessions; the replicator lives on its loop).
    public let node: FieldSyncNode
    /// This device's identity.
    public let identity: DeviceIdentity
    private let hub: ObserverHub
    private let clock: @Sendable () -> UInt64
    private struct Running {
        var daemon: NodeDaemon?
        var discovery: LANDiscovery?
        var closed = false
        /// `startSync` or `stopSync` is under way (a second call is refused, or does nothing).
        var changing = false
        /// Attached to a node someone else runs (`attach(to:)`): closing ends the streams only.
        var attached = false
    }
    private let running = NIOLockedValueBox(Running())

    private init(node: FieldSyncNode, identity: DeviceIdentity, hub: ObserverHub, clock: @escaping @Sendable () -> UInt64) {
        self.node = node
        self.identity = identity
        self.hub = hub
        self.clock = clock
    }

    /// The wall clock in ms since the Unix epoch (the default clock of an app).
    public static func wallClock() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    /// Opens a device: its keystore, trust, keys and store, on a new node (one event loop thread).
    ///
    /// The keystore is unlocked and the store opened on the node's own thread while the calling task is
    /// suspended: a passphrase keystore's Argon2id derivation (hundreds of milliseconds) holds neither
    /// the caller's thread nor Swift's cooperative pool, so the app's other tasks go on meanwhile.
    /// - Parameters:
    ///   - device: where the keystore and the store are, and how to unlock them.
    ///   - configuration: the node's configuration (network id, timeouts, live sessions).
    ///   - clock: the wall clock (ms since the Unix epoch) edits are stamped with.
    ///   - logger: the node's structured log.
    ///   - log: receives one plain line per noteworthy node event (a session's end, a refusal, a receipt written).
    ///   - warn: receives warnings found while opening and reading (a rolled-back store, damage, a store
    ///     behind the seq guard).
    /// - Returns: the open app.
    /// - Throws: `FieldSyncError`.
    public static func open(device: FieldSyncDevice, configuration: NodeConfiguration,
                            clock: @escaping @Sendable () -> UInt64 = FieldSyncApp.wallClock,
                            logger: Logger = Logger(label: "fieldsync.app", factory: { _ in SwiftLogNoOpLogHandler() }),
                            log: @escaping @Sendable (String) -> Void = { _ in },
                            warn: @escaping @Sendable (String) -> Void = { _ in }) async throws(FieldSyncError) -> FieldSyncApp {
        do {
            return try await openRaw(device: device, configuration: configuration, clock: clock, logger: logger, log: log, warn: warn)
        } catch {
            throw FieldSyncError(error)
        }
    }

    /// `open(device:configuration:clock:logger:log:warn:)` throwing the errors of the layers below as
    /// they are (the `fieldsync` commands print them unchanged).
    @_spi(CLI)
    public static func openRaw(device: FieldSyncDevice, configuration: NodeConfiguration,
                               clock: @escaping @Sendable () -> UInt64 = FieldSyncApp.wallClock,
                               logger: Logger = Logger(label: "fieldsync.app", factory: { _ in SwiftLogNoOpLogHandler() }),
                               log: @escaping @Sendable (String) -> Void = { _ in },
                               warn: @escaping @Sendable (String) -> Void = { _ in }) async throws -> FieldSyncApp {
        let hub = ObserverHub()
        let identityBox = NIOLockedValueBox<DeviceIdentity?>(nil)
        let node = try await FieldSyncNode.open(configuration: configuration, logger: logger, log: log) {
            let r = try device.openRaw(now: clock(), warn: warn)
            for w in try FieldSyncDevice.behindGuardWarnings(r) { warn(w) }
            try r.restoreClock()
            r.commitObserver = { [unowned r] notice in hub.committed(notice, replicator: r) }
            identityBox.withLockedValue { $0 = r.identity }
            return r
        }
        guard let identity = identityBox.withLockedValue({ $0 }) else { preconditionFailure("the node opened without a replicator") }
        return FieldSyncApp(node: node, identity: identity, hub: hub, clock: clock)
    }

    /// An app over a node that is already open and run by someone else (`fieldsync serve` runs the daemon;
    /// the command center reads and writes through the app): observation is installed on the node's
    /// replicator (chained after any commit observer already there). Closing the app ends its streams and
    /// refuses further calls; the node keeps running.
    /// - Throws: `FieldSyncError` (the node's loop is gone).
    public static func attach(to node: FieldSyncNode, clock: @escaping @Sendable () -> UInt64 = FieldSyncApp.wallClock)
        async throws(FieldSyncError) -> FieldSyncApp {
        let hub = ObserverHub()
        let identity: DeviceIdentity
        do {
            identity = try await node.withReplicator { r in
                let previous = r.commitObserver
                r.commitObserver = { [unowned r] notice in
                    previous?(notice)
                    hub.committed(notice, replicator: r)
                }
                return r.identity
            }
        } catch {
            throw FieldSyncError(error)
        }
        let app = FieldSyncApp(node: node, identity: identity, hub: hub, clock: clock)
        app.running.withLockedValue { $0.attached = true }
        return app
    }

    /// Runs `body` with a `RecordBook` on the node's loop (the replicator's thread), stamped with the
    /// app's clock now. Every typed call below is one `perform`.
    /// - Throws: `FieldSyncError` (the app was closed: `.failed`).
    public func perform<T: Sendable>(_ body: @escaping @Sendable (RecordBook) throws -> T) async throws(FieldSyncError) -> T {
        do { return try await performRaw(body) } catch { throw FieldSyncError(error) }
    }

    /// `perform(_:)` throwing the errors of the layers below as they are (the `fieldsync` commands print
    /// them unchanged).
    @_spi(CLI)
    public func performRaw<T: Sendable>(_ body: @escaping @Sendable (RecordBook) throws -> T) async throws -> T {
        try checkOpen()
        let now = clock()
        return try await node.withReplicator { r in try body(try RecordBook(replicator: r, now: now, restoringClock: false)) }
    }

    /// Refuses a call on a closed app (its loop is gone: a task submitted to it would never run).
    private func checkOpen() throws(FieldSyncError) {
        if running.withLockedValue({ $0.closed }) { throw FieldSyncError(.failed, "the app is closed; open the device again") }
    }

    // MARK: Writes

    /// Records a new incident (status reported). See `RecordBook.createIncident(_:)`.
    public func createIncident(_ draft: IncidentDraft) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.createIncident(draft) }
    }

    /// Changes an incident's fields. See `RecordBook.updateIncident(_:_:)`.
    public func updateIncident(_ id: String, _ update: IncidentUpdate) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.updateIncident(id, update) }
    }

    /// Moves an incident's status forward. See `RecordBook.setStatus(_:to:)`.
    public func setStatus(_ id: String, to status: Incident.Status) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.setStatus(id, to: status) }
    }

    /// Assigns units to an incident. See `RecordBook.assign(_:units:remove:dispatch:)`.
    public func assign(_ id: String, units: [String], remove: [String] = [], dispatch: Bool = false) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.assign(id, units: units, remove: remove, dispatch: dispatch) }
    }

    /// Appends a note to an incident or a visit. See `RecordBook.addNote(_:_:kind:)`.
    public func addNote(_ id: String, _ text: String, kind: RecordKind? = nil) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.addNote(id, text, kind: kind) }
    }

    /// Records feedback to the reporter of an incident. See `RecordBook.giveFeedback(_:_:)`.
    public func giveFeedback(_ id: String, _ feedback: String) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.giveFeedback(id, feedback) }
    }

    /// Closes an incident. See `RecordBook.close(_:feedback:)`.
    public func close(_ id: String, feedback: String? = nil) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.close(id, feedback: feedback) }
    }

    /// Reopens a resolved or closed incident. See `RecordBook.reopen(_:note:)`.
    public func reopen(_ id: String, note: String? = nil) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.reopen(id, note: note) }
    }

    /// Marks an incident as a duplicate of another. See `RecordBook.markDuplicate(_:of:)`.
    public func markDuplicate(_ id: String, of original: String) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.markDuplicate(id, of: original) }
    }

    /// Records a visit. See `RecordBook.createVisit(_:)`.
    public func createVisit(_ draft: VisitDraft) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.createVisit(draft) }
    }

    /// Changes a visit's fields. See `RecordBook.updateVisit(_:_:)`.
    public func updateVisit(_ id: String, _ update: VisitUpdate) async throws(FieldSyncError) -> RecordWrite {
        try await perform { try $0.updateVisit(id, update) }
    }

    // MARK: Queries

    /// The record an id or unique prefix (6 or more hex digits) names, found through the store's id index.
    public func record(_ id: String, kind: RecordKind? = nil) async throws(FieldSyncError) -> Record {
        try await perform { try $0.record(id, kind: kind) }
    }

    /// Records matching `query`, newest event first.
    public func records(_ query: RecordQuery) async throws(FieldSyncError) -> [Record] {
        try await perform { try $0.records(query) }
    }

    /// The signed history of a record, oldest first, each entry verified now.
    public func history(of id: RecordID) async throws(FieldSyncError) -> [AuditEntry] {
        try await perform { try $0.history(of: id) }
    }

    /// This device's own changes HQ has not receipted yet.
    public func pendingToHQ() async throws(FieldSyncError) -> UInt64 {
        try await perform { try StoreReport.read($0.replicator).pendingToHQ }
    }

    /// The records this device wrote to, newest event first, each with how many of its changes to it HQ
    /// has receipted (`reachedHQ` once all of them). One history query per record: meant for a device's
    /// own records (hundreds), not an archive.
    /// - Parameter limit: the most records to return.
    /// - Returns: the records and their receipt state.
    /// - Throws: `FieldSyncError` (the store, or a closed app).
    public func ownRecordReceipts(limit: Int? = nil) async throws(FieldSyncError) -> [OwnRecordReceipt] {
        try await perform { try OwnRecordReceipt.read($0.replicator, limit: limit) }
    }

    /// A snapshot of the device (what `fieldsync status` prints): its certificate chain, its logs and HQ
    /// receipts, its epoch keys, and with `ownRecords` its records and whether they reached HQ.
    /// - Parameters:
    ///   - staleAfter: age (ms) past which a scope's newest epoch key counts as stale (default 14 days).
    ///   - ownRecords: whether to list this device's own records with their receipt state.
    /// - Returns: the snapshot, taken now by the app's clock.
    /// - Throws: `FieldSyncError` (the store, or a closed app).
    public func status(staleAfter: UInt64 = 14 * 86_400_000, ownRecords: Bool = false) async throws(FieldSyncError) -> DeviceStatus {
        let now = clock()
        return try await perform { try DeviceStatus.read($0.replicator, now: now, staleAfter: staleAfter, ownRecords: ownRecords) }
    }

    /// The restore fence, if this device was restored from a backup and writes nothing until a sync with
    /// a peer that holds its own logs (docs/backup.md).
    /// - Returns: the fence, or nil when the device is not fenced.
    /// - Throws: `FieldSyncError` (the seq guard file, or a closed app).
    public func restoreFence() async throws(FieldSyncError) -> RestoreFence? {
        try await perform { try $0.replicator.restoreFence() }
    }

    /// Checks every change the store holds (chunked) and quarantines the ones damaged on disk, so the
    /// first peer that holds one sends it again; `fieldsync serve` does this at start.
    /// - Parameter damage: from now on receives every damaged row the store finds on read (replacing
    ///   the `warn` lines of `open`); nil leaves the handler as it is.
    /// - Returns: the changes checked, those quarantined now, and all in quarantine, and the store's
    ///   rollback report if it was rolled back.
    /// - Throws: `FieldSyncError` (the store, or a closed app).
    public func checkStore(damage: (@Sendable (StoreDamage) -> Void)? = nil) async throws(FieldSyncError) -> StoreCheck {
        do { return try await checkStoreRaw(damage: damage) } catch { throw FieldSyncError(error) }
    }

    /// `checkStore(damage:)` throwing the errors of the layers below as they are (`fieldsync serve`
    /// prints them unchanged).
    @_spi(CLI)
    public func checkStoreRaw(damage: (@Sendable (StoreDamage) -> Void)? = nil) async throws -> StoreCheck {
        try await performRaw { book in
            guard let store = book.replicator.store as? SQLiteStore else { return StoreCheck(checked: 0, quarantinedNow: 0, quarantined: 0) }
            if let damage { store.damageHandler = damage }
            let rollback = try store.rollbackReport().map { "\($0)" }
            let scrub = try store.scrubChanges()
            return StoreCheck(checked: scrub.checked, quarantinedNow: scrub.quarantined.count, quarantined: try store.status().quarantined,
                              rollback: rollback)
        }
    }

    // MARK: Observation

    /// Record changes as they are committed, local writes and changes arriving by sync, in commit order:
    /// each record after the change, with where its last edit came from. With a query, only records
    /// that match it after the change (its `limit` is ignored). The stream ends when the app closes;
    /// cancelling the task iterating it (or dropping it) unregisters the observer.
    /// - Parameters:
    ///   - query: only records that match it after the change (nil: every record).
    ///   - bufferingNewest: changes kept for a slow consumer (older ones are dropped).
    public func recordChanges(matching query: RecordQuery? = nil, bufferingNewest: Int = 1_024) -> AsyncStream<RecordChange> {
        let (stream, continuation) = AsyncStream.makeStream(of: RecordChange.self, bufferingPolicy: .bufferingNewest(bufferingNewest))
        hub.addRecords(query, continuation)
        return stream
    }

    /// Sync events (peers found, sessions, live sessions, receipts, pending-to-HQ count, revocations).
    /// The stream ends when the app closes; cancelling its task unregisters it.
    public func syncEvents(bufferingNewest: Int = 1_024) -> AsyncStream<SyncEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SyncEvent.self, bufferingPolicy: .bufferingNewest(bufferingNewest))
        hub.addEvents(continuation)
        return stream
    }

    /// How many observers are registered (record changes, sync events): 0 once every stream ended.
    public var observerCounts: (records: Int, events: Int) { hub.counts }

    // MARK: Sync

    /// One sync session with a peer now (the `fieldsync sync` of the app); its result is also a sync event.
    /// - Parameters:
    ///   - host: the peer's address.
    ///   - port: the peer's port.
    ///   - progress: called on the node's loop after every read of the session with its counters so far.
    /// - Returns: how the session ended (with the node configured for live sessions and the peer agreeing,
    ///   only when its connection closes).
    /// - Throws: `FieldSyncError` (no connection, the node at its session limit, a closed app).
    public func sync(host: String, port: Int, progress: (@Sendable (SessionResult) -> Void)? = nil) async throws(FieldSyncError) -> SessionResult {
        try checkOpen()
        do {
            let result = try await node.sync(host: host, port: port, progress: progress)
            hub.emit(.sessionEnded(result))
            return result
        } catch {
            throw FieldSyncError(error)
        }
    }

    /// Starts background sync: the node daemon listens, syncs with its static peers and the ones
    /// discovery finds, keeps live sessions, and pushes every write (docs/node.md). ``stopSync(grace:)``
    /// stops it and leaves the app open; it may then start again.
    /// - Parameters:
    ///   - options: where to listen, the peers and the scheduling policy.
    ///   - discovery: LAN discovery, if wanted (beacons carry the listening port when `announce`).
    ///   - discoverySecret: the network's shared discovery secret (beacons of other secrets are ignored).
    ///   - announce: whether this device's beacons announce its listening port.
    ///   - owner: the owner's own daemon hooks (an HQ feed's `storeChanged`), run beside the app's sync events.
    ///   - metrics: where the daemon's metrics go (default: a registry of their own, read by no one).
    /// - Throws: `FieldSyncError` (`.usage` if sync already runs or the app is closed; `.failed` if the
    ///   address cannot be bound or discovery cannot start, and background sync is then stopped again).
    public func startSync(_ options: DaemonOptions, discovery: DiscoveryConfiguration? = nil, discoverySecret: SecretBytes? = nil,
                          announce: Bool = true, hooks owner: DaemonHooks = DaemonHooks(), metrics: NodeMetrics? = nil) async throws(FieldSyncError) {
        let claimed = running.withLockedValue { r in
            guard !r.closed, r.daemon == nil, !r.changing else { return false }
            r.changing = true
            return true
        }
        guard claimed else { throw FieldSyncError(.usage, "background sync already runs, or the app is closed") }
        defer { running.withLockedValue { $0.changing = false } }
        var hooks = owner
        hooks.sessionEnded = { [hub] result, r in
            hub.emit(.sessionEnded(result))
            try owner.sessionEnded?(result, r)
        }
        hooks.sessionStarted = { [hub] start in
            hub.emit(.sessionStarted(start))
            owner.sessionStarted?(start)
        }
        hooks.sessionWentLive = { [hub] session in
            hub.emit(.liveSessionStarted(session))
            owner.sessionWentLive?(session)
        }
        hooks.peerAdded = { [hub] address, source in
            hub.emit(.peerAdded(address, source))
            owner.peerAdded?(address, source)
        }
        let daemon = NodeDaemon(node: node, options: options,
                                metrics: metrics ?? NodeMetrics(factory: PrometheusMetricsFactory(registry: PrometheusCollectorRegistry())),
                                hooks: hooks)
        do {
            try await daemon.start()
            running.withLockedValue { $0.daemon = daemon }
            if let discovery {
                let port = announce ? await daemon.listeningPort : nil
                let lan = try await daemon.startDiscovery(discovery, secret: discoverySecret, announcePort: port)
                running.withLockedValue { $0.discovery = lan }
            }
        } catch {
            let lan = running.withLockedValue { r in
                defer { r.daemon = nil; r.discovery = nil }
                return r.discovery
            }
            await lan?.stop()
            _ = try? await daemon.stop(grace: .zero)
            throw FieldSyncError(error)
        }
    }

    /// Stops background sync and leaves the app open: no new sessions are scheduled or accepted, running
    /// ones get `grace` to finish and are then cut, discovery stops. Writes, queries and observation go
    /// on; ``startSync(_:discovery:discoverySecret:announce:hooks:metrics:)`` starts it again. Does
    /// nothing when background sync does not run.
    /// - Parameter grace: how long running sessions may take to finish.
    /// - Returns: how many sessions were cut when the grace period ran out.
    @discardableResult
    public func stopSync(grace: TimeAmount = .seconds(5)) async -> Int {
        let taken = running.withLockedValue { r -> (NodeDaemon?, LANDiscovery?)? in
            guard !r.closed, !r.changing, r.daemon != nil else { return nil }
            r.changing = true
            defer { r.daemon = nil; r.discovery = nil }
            return (r.daemon, r.discovery)
        }
        guard let (daemon, discovery) = taken else { return 0 }
        defer { running.withLockedValue { $0.changing = false } }
        await discovery?.stop()
        return (try? await daemon?.stop(grace: grace)) ?? 0
    }

    /// Whether background sync runs.
    public var isSyncing: Bool { running.withLockedValue { $0.daemon != nil } }

    /// Closes every session's connection now, background sync's and `sync`'s (each loses at most its
    /// unacknowledged batches, which the next session resends); a second signal during `serve`'s drain.
    /// - Returns: how many sessions were open.
    @discardableResult
    public func cutSessions() async -> Int {
        (try? await node.cutSessions()) ?? 0
    }

    /// The bound port of background sync (nil when it does not run).
    public var listeningPort: Int? {
        get async {
            guard let daemon = running.withLockedValue({ $0.daemon }) else { return nil }
            return await daemon.listeningPort
        }
    }

    /// Adds a peer to background sync (synced at once, then on the schedule).
    public func addPeer(host: String, port: Int) {
        running.withLockedValue { $0.daemon }?.addPeer(host: host, port: port, source: .static)
    }

    /// Closes the app: background sync stops (no new sessions; running ones get `grace` to finish,
    /// then are cut), discovery stops, the node's loop and the store are closed, and every observation
    /// stream ends. Idempotent. A closed app refuses every call (`FieldSyncError` `.failed`); open the
    /// device again to go on. To stop syncing and keep the app, use ``stopSync(grace:)``.
    /// - Parameter grace: how long running sessions may take to finish.
    public func close(grace: TimeAmount = .seconds(5)) async {
        let (first, daemon, discovery, attached) = running.withLockedValue { r in
            defer { r.closed = true; r.daemon = nil; r.discovery = nil }
            return (!r.closed, r.daemon, r.discovery, r.attached)
        }
        guard first else { return }
        if attached { return hub.finishAll() }
        await discovery?.stop()
        if let daemon {
            _ = try? await daemon.shutdown(grace: grace)
        } else {
            try? await node.shutdown()
        }
        hub.finishAll()
    }
}
