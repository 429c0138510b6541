// Sessions, CSRF tokens and login rate limits of the command center. In memory: a restarted node logs
// everyone out. Every check reads the accounts file again when it changed on disk, so `fieldsync web user
// remove` (another process) ends the removed operator's sessions and live streams at their next request or
// heartbeat (within a second).

import CSodium
import FieldSyncCore
import Foundation
import NIOConcurrencyHelpers

/// A logged-in operator, as a request sees it.
public struct WebOperator: Sendable, Equatable {
    /// Login name.
    public var name: String
    /// Scopes the operator may see (empty: everything this node holds).
    public var scopes: [Scope]
    /// The session's CSRF token (every POST form carries it).
    public var csrf: String
    /// The session token (the cookie).
    public var token: String

    /// Whether the operator may see a record of `scope`.
    public func mayRead(_ scope: Scope) -> Bool { scopes.isEmpty || scopes.contains { $0.contains(scope) } }
}

/// Why a login was refused.
public enum LoginRefusal: Error, Sendable, Equatable {
    /// Wrong name or password (one message for both).
    case wrongCredentials
    /// Too many failures for the account or from the source: wait.
    case rateLimited(retryAfterSeconds: Int)
}

/// Random tokens (libsodium's CSPRNG), hex.
enum WebToken {
    static func random(_ bytes: Int = 32) -> String {
        var b = [UInt8](repeating: 0, count: bytes)
        randombytes_buf(&b, bytes)
        return b.map { String(format: "%02x", $0) }.joined()
    }

    /// Constant-time comparison of two strings.
    static func equal(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count, !x.isEmpty else { return false }
        return sodium_memcmp(x, y, x.count) == 0
    }
}

/// The command center's security state: accounts (re-read on change), sessions, login failures.
public final class WebSecurity: Sendable {
    /// Limits of the login rate limiter.
    public struct Limits: Sendable {
        /// Failures per account within `window` before its logins are refused until the window passes.
        public var failuresPerAccount = 5
        /// Failures per source address within `window`.
        public var failuresPerSource = 20
        /// The window (ms).
        public var window: UInt64 = 15 * 60 * 1000
        /// Defaults.
        public init() {}
    }

    private struct Session {
        var name: String
        var accountID: String
        var csrf: String
        var expires: UInt64
    }

    private struct State {
        var accounts = OperatorAccounts()
        var stamp: (mtime: timespec, size: Int, ino: UInt)?
        var sessions: [String: Session] = [:]
        var failures: [String: [UInt64]] = [:]
    }

    private let usersPath: String
    private let sessionLifetime: UInt64
    private let limits: Limits
    private let clock: @Sendable () -> UInt64
    private let state = NIOLockedValueBox(State())

    /// - Parameters:
    ///   - usersPath: the operator accounts file.
    ///   - sessionLifetime: ms a login lasts.
    ///   - clock: ms since the Unix epoch.
    public init(usersPath: String, sessionLifetime: UInt64, limits: Limits = Limits(), clock: @escaping @Sendable () -> UInt64) {
        self.usersPath = usersPath
        self.sessionLifetime = sessionLifetime
        self.limits = limits
        self.clock = clock
    }

    /// Re-reads the accounts file when its inode, size or mtime changed (cheap `stat` otherwise). A file
    /// that cannot be read leaves no account: everyone is logged out rather than trusting stale data.
    private func refresh(_ s: inout State) {
        var st = stat()
        let present = stat(usersPath, &st) == 0
        let stamp = present ? (mtime: st.st_mtim, size: Int(st.st_size), ino: UInt(st.st_ino)) : nil
        if let old = s.stamp, let stamp, old.mtime.tv_sec == stamp.mtime.tv_sec, old.mtime.tv_nsec == stamp.mtime.tv_nsec,
           old.size == stamp.size, old.ino == stamp.ino {
            return
        }
        if s.stamp == nil, stamp == nil, s.accounts.users.isEmpty { return }
        s.stamp = stamp
        s.accounts = (try? OperatorAccounts.load(path: usersPath)) ?? OperatorAccounts()
        // Sessions of accounts that are gone (or were replaced) end now.
        let live = Dictionary(s.accounts.users.map { ($0.name, $0.id) }, uniquingKeysWith: { a, _ in a })
        s.sessions = s.sessions.filter { live[$0.value.name] == $0.value.accountID }
    }

    /// Checks a login; on success returns a new session token. Failures count per account and per source;
    /// past the limit the password is not even checked.
    public func login(name: String, password: String, source: String) -> Result<String, LoginRefusal> {
        let now = clock()
        let (account, limited) = state.withLockedValue { s -> (OperatorAccount?, Int?) in
            refresh(&s)
            for key in ["a:" + name, "s:" + source] {
                s.failures[key] = (s.failures[key] ?? []).filter { $0 + limits.window > now }
            }
            let a = s.failures["a:" + name]!, src = s.failures["s:" + source]!
            if a.count >= limits.failuresPerAccount || src.count >= limits.failuresPerSource {
                let oldest = (a.count >= limits.failuresPerAccount ? a : src).min() ?? now
                return (nil, Int((oldest + limits.window - now) / 1000) + 1)
            }
            return (s.accounts.account(name), nil)
        }
        if let limited { return .failure(.rateLimited(retryAfterSeconds: limited)) }
        // Verify outside the lock (Argon2id takes tens of ms); an unknown name still costs a hash.
        let ok: Bool
        if let account {
            ok = OperatorAccounts.verify(password, hash: account.passwordHash)
        } else {
            _ = OperatorAccounts.verify(password, hash: Self.dummyHash)
            ok = false
        }
        return state.withLockedValue { s in
            guard ok, let account else {
                s.failures["a:" + name, default: []].append(now)
                s.failures["s:" + source, default: []].append(now)
                if s.failures.count > 100_000 { s.failures = s.failures.filter { $0.value.contains { $0 + limits.window > now } } }
                return .failure(.wrongCredentials)
            }
            s.failures["a:" + name] = nil
            let token = WebToken.random()
            s.sessions[token] = Session(name: account.name, accountID: account.id, csrf: WebToken.random(), expires: now + sessionLifetime)
            return .success(token)
        }
    }

    /// A hash to verify against when the name is unknown (same cost as a real one, so timing does not tell).
    private static let dummyHash: String = (try? OperatorAccounts.hash("not-a-real-password", cost: .testingOnlyMinimum)) ?? ""

    /// The operator of a session token, if it is live (not expired, account still there).
    public func session(_ token: String?) -> WebOperator? {
        guard let token, token.utf8.count == 64 else { return nil }
        let now = clock()
        return state.withLockedValue { s in
            refresh(&s)
            guard let session = s.sessions[token] else { return nil }
            guard session.expires > now else {
                s.sessions[token] = nil
                return nil
            }
            guard let account = s.accounts.account(session.name), account.id == session.accountID else {
                s.sessions[token] = nil
                return nil
            }
            let scopes = account.scopes.compactMap { try? Scope($0) }
            return WebOperator(name: account.name, scopes: scopes, csrf: session.csrf, token: token)
        }
    }

    /// Ends a session (logout).
    public func logout(_ token: String) {
        _ = state.withLockedValue { $0.sessions.removeValue(forKey: token) }
    }

    /// Sessions open now (expired ones dropped).
    public var openSessions: Int {
        let now = clock()
        return state.withLockedValue { s in
            refresh(&s)
            s.sessions = s.sessions.filter { $0.value.expires > now }
            return s.sessions.count
        }
    }
}
