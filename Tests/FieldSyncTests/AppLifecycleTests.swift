import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import Testing

/// The app's life cycle: opening off the caller's thread, and background sync stopped and started again
/// while the app stays open.
@Suite(.ownThread) struct AppLifecycleTests {
    /// Stopping background sync leaves the app open: it writes, queries and observes, and sync starts
    /// again (a stopped app used to be a closed one: every call was refused).
    @Test(.timeLimit(.minutes(2))) func stoppingSyncKeepsTheAppOpen() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let station = try await FieldSyncApp.open(device: try f.device("st17", role: .station), configuration: AppFixtures.configuration)
        let backpack = try await FieldSyncApp.open(device: try f.device("bp17"), configuration: AppFixtures.configuration)
        let arrived = station.recordChanges(matching: .openIncidents(in: AppFixtures.station))
        let mine = backpack.recordChanges()
        try await station.startSync(AppFixtures.syncOptions())
        let port = try #require(await station.listeningPort)
        let peers = [PeerAddress(host: "127.0.0.1", port: port)]
        try await backpack.startSync(AppFixtures.syncOptions(peers: peers))
        let first = try await backpack.createIncident(AppFixtures.draft("Before the stop"))
        #expect(await AppSyncTests.first(arrived, within: 20) { $0.record.id == first.record.id } != nil)

        await backpack.stopSync(grace: .seconds(1))
        #expect(!backpack.isSyncing)
        #expect(await backpack.listeningPort == nil)
        // Still open: a write, its observer, a query.
        let second = try await backpack.createIncident(AppFixtures.draft("While sync is stopped"))
        #expect(await AppSyncTests.first(mine, within: 10) { $0.record.id == second.record.id }?.origin == .local)
        #expect(try await backpack.record(second.record.id.description).id == second.record.id)
        #expect(try await backpack.records(RecordQuery(kind: .incident)).count == 2)
        #expect(try await backpack.pendingToHQ() == 2)

        // Started again: the write made while stopped reaches the station.
        try await backpack.startSync(AppFixtures.syncOptions(peers: peers))
        #expect(backpack.isSyncing)
        #expect(await AppSyncTests.first(arrived, within: 20) { $0.record.id == second.record.id }?.origin == .remote(backpack.identity.id))
        // Stopping twice, or when not running, does nothing.
        await backpack.stopSync(grace: .zero)
        #expect(await backpack.stopSync(grace: .zero) == 0)
        await backpack.close(grace: .zero)
        await station.close(grace: .zero)
        #expect(station.observerCounts == (0, 0) && backpack.observerCounts == (0, 0))
    }

    /// Opening a passphrase keystore derives its key with Argon2id (Argon2id moderate: 256 MiB, hundreds
    /// of milliseconds). `open` runs it on the node's thread and suspends the caller: on an executor of
    /// one thread, another task runs meanwhile. Before, `open` waited for the node with a blocking
    /// `wait()`, so that thread, a cooperative pool thread in an app, did nothing else until it was done.
    @Test(.timeLimit(.minutes(2))) func openingDoesNotHoldTheCallersThread() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let device = try f.device("bp17", passphrase: Array("backpack 17 passphrase".utf8), kdf: .moderate)
        let executor = SingleThreadExecutor()
        defer { executor.finish() }
        let opened = Flag()
        let (ticksWhileOpening, app) = try await withTaskExecutorPreference(executor) { () async throws -> (Int, FieldSyncApp) in
            async let app: FieldSyncApp = {
                let a = try await FieldSyncApp.open(device: device, configuration: AppFixtures.configuration)
                opened.set()
                return a
            }()
            // Another task on the same single thread: it runs only while `open` is suspended. It sleeps
            // on `TestClock`: a `Task.sleep` wakes through the cooperative pool, and in a CI run, with the
            // pool held by CPU-bound tests, its first 5 ms sleep ended after the keystore was open.
            var ticks = 0
            while !opened.isSet {
                try await TestClock.sleep(for: .milliseconds(5))
                if !opened.isSet { ticks += 1 }
            }
            return (ticks, try await app)
        }
        let started = ContinuousClock.now
        _ = try await app.createIncident(AppFixtures.draft("opened with a passphrase"))
        print("ticks of another task on the opener's one thread while opening: \(ticksWhileOpening); write after \(ContinuousClock.now - started)")
        #expect(ticksWhileOpening > 0, "the caller's thread ran nothing else while the keystore was unlocked")
        await app.close(grace: .zero)
    }
}

/// A boolean set once, read from any thread.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

/// A task executor with exactly one thread: a job that blocks it holds up every other job.
final class SingleThreadExecutor: TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var finishing = false

    init() {
        let thread = Thread { [self] in run() }
        thread.name = "single-thread executor"
        thread.start()
    }

    func enqueue(_ job: UnownedJob) {
        condition.withLock {
            jobs.append(job)
            condition.signal()
        }
    }

    /// Lets the thread end once its queue is empty.
    func finish() {
        condition.withLock {
            finishing = true
            condition.signal()
        }
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty, !finishing { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
