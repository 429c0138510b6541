// Verification and opening of incoming batches off the node's event loop (docs/node.md, "Threading").

import FieldSyncProtocol
import NIOCore
import NIOPosix

/// Runs `BatchPreparation.prepare()` (decoding the changes, entitlement, signature and certificate
/// checks, opening, decoding and validating the edits: everything of ingesting a batch that does not need
/// the store) on worker threads, so that the node's event loop only merges, seals and commits, and a
/// second core prepares the next batches meanwhile. The work is values in, values out
/// (`ChangeVerifier` is a snapshot): the replicator and its store stay on the loop. Each session applies
/// its batches in arrival order whatever order the workers finish in (`SyncSession`), and holds at
/// most `SyncSession.maxBatchesPreparing` of them, so the queue is bounded by the sessions running.
final class BatchPreparer: Sendable {
    /// One per process, shared by its nodes (a node per process in production; tests run several): one
    /// thread fewer than the cores, at least one, so that the loop keeps a core.
    static let shared = BatchPreparer(threads: max(1, System.coreCount - 1))

    private let pool: NIOThreadPool

    /// Starts `threads` worker threads (never stopped: the process-wide pool lives as long as the process).
    init(threads: Int) {
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
    }

    /// Prepares `batch` on a worker; the future completes on `loop`.
    func prepare(_ batch: BatchPreparation, on loop: any EventLoop) -> EventLoopFuture<PreparedBatch> {
        pool.runIfActive(eventLoop: loop) { batch.prepare() }
    }
}
