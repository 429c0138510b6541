import FieldSyncTestSupport
import Foundation
import Testing

/// The trait that keeps blocking tests off the cooperative pool (Tests/FieldSyncTestSupport): a test it
/// applies to runs, before and after each suspension, on its own threads, and blocking there does not
/// stop tests on the pool.
@Suite(.ownThread) struct OwnThreadTests {
    @Test func aTestRunsOnItsOwnThreadsAcrossSuspensions() async throws {
        #expect(OwnThreadExecutor.isCurrentThread)
        try await Task.sleep(for: .milliseconds(10))
        #expect(OwnThreadExecutor.isCurrentThread)
        async let child: Bool = OwnThreadExecutor.isCurrentThread
        #expect(await child)
    }

    /// More blocking tasks than the machine has cores all make progress at once: sixteen, each blocked
    /// for 300 ms, finish in well under the 2.4 s they need taking turns on two pool threads (CI's).
    @Test func blockingChildTasksDoNotWaitForEachOther() async {
        let start = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<16 { group.addTask { usleep(300_000) } }
        }
        #expect(ContinuousClock.now - start < .milliseconds(1_800))
    }

    /// `TestClock.sleep` wakes its test on time while CPU-bound tests hold every pool thread; `Task.sleep`
    /// does not (a 50 ms `Task.sleep` took 2.9 to 5.9 s here, which failed the daemon tests' polls in CI).
    @Test func theTestClockWakesOnTimeWhileThePoolIsBusy() async throws {
        CooperativePool.occupy(for: .seconds(6))
        try await TestClock.sleep(for: .milliseconds(100))  // the busy tasks have started
        let start = ContinuousClock.now
        try await TestClock.sleep(for: .milliseconds(50))
        let slept = ContinuousClock.now - start
        #expect(OwnThreadExecutor.isCurrentThread)
        #expect(slept < .milliseconds(2_000), "\(slept)")
    }
}
