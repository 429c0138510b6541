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

extension Task where Failure == any Error {
    /// Starts an unstructured task on threads of its own (``OwnThreadExecutor/shared``).
    ///
    /// A plain `Task { ... }` does not inherit the test's task executor preference: it runs on the
    /// cooperative pool, and waits there for as long as CPU-bound tests hold the pool's two threads
    /// (in CI, a session started that way did not begin for over 20 s). Use this one in tests instead.
    @discardableResult
    public static func onOwnThread(operation: sending @escaping () async throws -> Success) -> Task<Success, Failure> {
        Task(executorPreference: OwnThreadExecutor.shared, operation: operation)
    }
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

    /// An executor for the unstructured tasks tests start (``Task/onOwnThread(operation:)``); it never finishes.
    public static let shared = OwnThreadExecutor(name: "unstructured test tasks")

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

/// Sleeps that do not need the cooperative pool.
///
/// `Task.sleep` wakes its task through the cooperative pool, even a task that prefers another executor:
/// with the pool's threads held by CPU-bound tests, a 50 ms `Task.sleep` in an `.ownThread` test took
/// 5.9 s (four 3 s busy tasks on two pool threads). Polling loops and pauses in timing-sensitive tests
/// use ``TestClock/sleep(for:)`` instead: its timer runs on a dispatch queue of its own, and the task
/// resumes on its preferred executor.
public enum TestClock {
    private static let timers = DispatchQueue(label: "fieldsync.test.timers")

    /// Suspends for `duration`, then throws `CancellationError` if the task was cancelled meanwhile.
    public static func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        let nanoseconds = Int(duration / .nanoseconds(1))
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            timers.asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) { c.resume() }
        }
        try Task.checkCancellation()
    }
}

/// The cooperative pool, made busy on purpose.
public enum CooperativePool {
    /// Occupies every thread of the cooperative pool (twice over) with CPU-bound work that never
    /// suspends, for `duration`, as the simulator's tests do in a parallel run: for testing that
    /// something does not wait for the pool. Do not await the tasks: in a parallel run they may start
    /// only once other tests free the pool; each ends by itself when `duration` is over (at once if it
    /// starts later).
    @discardableResult
    public static func occupy(for duration: Duration) -> [Task<Int, Never>] {
        let end = ContinuousClock.now + duration
        return (0..<(2 * ProcessInfo.processInfo.activeProcessorCount)).map { _ in
            Task.detached {
                var spins = 0
                while ContinuousClock.now < end { spins &+= 1 }
                return spins
            }
        }
    }
}
