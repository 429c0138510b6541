// Shutting an event loop group down without waiting for Swift's cooperative thread pool.

import Dispatch
import NIOCore
import NIOPosix

extension MultiThreadedEventLoopGroup {
    /// Where group shutdowns report back: a queue of FieldSync's own, which gets a thread of its own
    /// when it has work (a labelled queue targets libdispatch's overcommitting root queue).
    private static let shutdownQueue = DispatchQueue(label: "fieldsync.eventloopgroup.shutdown")

    /// Stops the group's threads and returns once they have ended, like NIO's `shutdownGracefully()`,
    /// but without depending on Swift's cooperative pool.
    ///
    /// NIO's `shutdownGracefully()` completes on `DispatchQueue.global()`. On Linux that queue's threads
    /// are those of Swift's cooperative pool (one per core), so while CPU-bound work held the pool (an
    /// app's own work, or the simulator's tests in a parallel run) a node's shutdown waited for it: 36 to
    /// 39 s measured in a full test run, where the drain before it took 0.3 s.
    package func shutdownOffThePool() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            shutdownGracefully(queue: Self.shutdownQueue) { error in
                if let error { c.resume(throwing: error) } else { c.resume() }
            }
        }
    }
}
