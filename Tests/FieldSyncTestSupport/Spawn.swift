import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a child started with `posix_spawn` must not inherit.
public enum Spawn {
    /// Adds "close every descriptor from 3 up" to `actions` (glibc's `posix_spawn_file_actions_addclosefrom_np`,
    /// glibc 2.34 and later, looked up at run time: Swift's Glibc module does not declare it).
    ///
    /// SwiftNIO opens its sockets without close-on-exec, so a plain `posix_spawn` hands the child every
    /// connection the test process holds at that moment. A child that outlives the spawn (chromedriver and
    /// its browser, a PostgreSQL server) then keeps those connections open after the test closed them: the
    /// peer never sees them end (a daemon's live session outlived the peer's shutdown, and a node's close of
    /// a garbage connection reached the client only 39 s later, when a PostgreSQL cluster stopped; both in
    /// full parallel runs). Foundation's `Process` already closes them.
    /// - Returns: false when this glibc lacks the call (the child then inherits them).
    @discardableResult
    public static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) -> Bool {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return false }
        return unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3) == 0
    }
}
