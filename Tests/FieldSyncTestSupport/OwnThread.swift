import Foundation
import Testing

/// Runs each test it applies to on threads of its own instead of Swift's cooperative thread pool.
///
/// The cooperative pool has one thread per core: two on the CI machine. A test that blocks (waits for a
/// process, reads a pipe to its end, sleeps, makes a blocking socket call) holds one of those threads for
/// as long as it blocks, and two such tests at once stop every other test in the process, including
/// the daemon tests whose timers and deadlines then fire late and fail. Put this trait on every suite
/// whose tests block, and on suites whose tests measure time, so that neither depends on what else
/// runs: `@Suite(.ownThread) struct ProcessTests { ... }`.
///
/// The test's body runs with a task executor preference (SE-0417) for a pool of dedicated threads
/// that grows whenever every thread is busy, so its synchronous parts and its child tasks run there
/// and a blocked child never holds up another. CPU-bound tests that do not block
/// are better left on the cooperative pool, which bounds how many run at once.
public struct OwnThreadTrait: SuiteTrait, TestTrait, TestScoping {
    /// Applies to every test of a suite it is put on, and to its nested suites.
    public var isRecursive: Bool { true }

    /// One scope per test function; suites themselves run as usual.
    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        test.isSuite ? nil : self
    }

    /// Runs `function` on a pool of threads made for this test, then lets the pool's threads end.
    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        if OwnThreadExecutor.isCurrentThread {
            try await function()
            return
        }
        let executor = OwnThreadExecutor(name: test.name)
        defer { executor.finish() }
        try await withTaskExecutorPreference(executor) { try await function() }
    }
}

extension Trait where Self == OwnThreadTrait {
    /// Runs the test (or each test of the suite) on threads of its own: see ``OwnThreadTrait``.
    public static var ownThread: Self { Self() }
}

/// A task executor backed by dedicated threads (never the cooperative pool): one to start with, and
/// one more whenever a job is queued while every thread is running one.
public final class OwnThreadExecutor: TaskExecutor, @unchecked Sendable {
    private static let marker = "fieldsync.ownThread"
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var finishing = false
    private var idle = 0
    private let name: String

    /// Whether the calling thread belongs to an `OwnThreadExecutor`.
    public static var isCurrentThread: Bool { Thread.current.threadDictionary[marker] != nil }

    /// An executor whose threads are named after `name` (the test's name).
    public init(name: String) {
        self.name = String(name.prefix(40))
    }

    /// Starts one more worker thread. Called with `condition` locked.
    private func startThread() {
        let thread = Thread { [self] in
            Thread.current.threadDictionary[Self.marker] = true
            self.work()
        }
        thread.name = "test: \(name)"
        thread.start()
    }

    /// Queues `job` to run on one of this executor's threads.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        if idle < jobs.count { startThread() }
        condition.signal()
        condition.unlock()
    }

    /// Lets the threads end once no job is queued. A job queued afterwards (a task the test left
    /// running) still runs, on a thread started for it (no thread is idle then).
    public func finish() {
        condition.lock()
        finishing = true
        condition.broadcast()
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            idle += 1
            while jobs.isEmpty && !finishing { condition.wait() }
            idle -= 1
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
