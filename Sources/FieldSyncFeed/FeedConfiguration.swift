// Where the feed writes: a PostgreSQL URL, a schema, a password file (docs/postgres-feed.md, "Config").

import Foundation
import NIOSSL
import PostgresNIO

/// An error of the feed: a bad config, a refused role, or the database saying no. `description` is meant
/// for an operator (PostgreSQL's own message is included; postgres-nio hides it by default).
public struct FeedError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure.
    public enum Code: String, Sendable {
        case badConfig, refusedRole, database, notEmpty, sourceMismatch
    }

    /// The kind.
    public var code: Code
    /// The text.
    public var description: String

    /// Creates an error.
    public init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }

    /// An operator's line for any error the feed meets (PostgreSQL's code and message when it has them).
    public static func describe(_ error: any Error) -> String {
        if let e = error as? FeedError { return e.description }
        if let e = error as? PSQLError {
            var parts = ["PostgreSQL: \(e.code)"]
            if let m = e.serverInfo?[.message] { parts.append(m) }
            if let s = e.serverInfo?[.sqlState] { parts.append("(SQLSTATE \(s))") }
            if let d = e.serverInfo?[.detail] { parts.append(d) }
            if let u = e.underlying { parts.append("\(u)") }
            if e.code == .sslUnsupported {
                parts.append("(the URL asks for sslmode=require and the server does not offer TLS)")
            }
            return parts.joined(separator: " ")
        }
        if let e = error as? PostgresTransactionError {
            return [e.beginError, e.closureError, e.commitError, e.rollbackError].compactMap { $0.map(describe) }.joined(separator: "; ")
        }
        return "\(error)"
    }
}

/// The feed's settings: `"feed": {"postgres": {"url": ..., "schema": ..., "passwordFile": ..., "batchSize": ...}}`.
///
/// ```swift
/// let c = try FeedConfiguration(url: "postgres://fieldsync@db.hq:5432/police?sslmode=require", schema: "longnan",
///                               passwordFile: "/etc/fieldsync/pg.pass")
/// ```
public struct FeedConfiguration: Sendable, Equatable {
    /// TLS to the database, from the URL's `sslmode`.
    public enum TLSMode: String, Sendable {
        /// `sslmode=disable` (the default without `sslmode`, and the only one on a Unix socket).
        case disable
        /// `sslmode=prefer`: TLS if the server offers it.
        case prefer
        /// `sslmode=require`: no TLS, no connection; the certificate is not checked (as libpq's `require`).
        case require
        /// `sslmode=verify-ca`: TLS, and the certificate chains to a CA the system trusts.
        case verifyCA = "verify-ca"
        /// `sslmode=verify-full`: as `verify-ca`, and the certificate names the host.
        case verifyFull = "verify-full"
    }

    /// The URL as given (it holds no password: that comes from `passwordFile`).
    public var url: String
    /// The PostgreSQL schema the feed's tables live in (a plain identifier: `[a-z_][a-z0-9_]*`).
    public var schema: String
    /// A file whose first line is the password (mode 0600), or nil (trust or peer authentication).
    public var passwordFile: String?
    /// Changes per PostgreSQL transaction.
    public var batchSize: Int
    /// User, database, and where the server is.
    public var user: String
    public var database: String
    public var host: String
    public var port: Int
    /// A Unix socket directory (`?host=/dir`, as libpq spells it): the socket is `DIR/.s.PGSQL.PORT`.
    public var socketDirectory: String?
    /// TLS mode.
    public var tls: TLSMode

    /// Parses `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=...&host=/socket/dir]`.
    /// - Throws: `FeedError.badConfig` naming what is wrong (a password in the URL is refused: use `passwordFile`).
    public init(url: String, schema: String = "fieldsync", passwordFile: String? = nil, batchSize: Int = 1000) throws {
        self.url = url
        self.schema = schema
        self.passwordFile = passwordFile
        self.batchSize = batchSize
        guard let u = URLComponents(string: url), ["postgres", "postgresql"].contains(u.scheme ?? "") else {
            throw FeedError(.badConfig, "feed.postgres.url: \"\(url)\" is not postgres://USER@HOST[:PORT]/DATABASE")
        }
        guard u.password == nil else {
            throw FeedError(.badConfig, "feed.postgres.url: holds a password; put it in a file (mode 0600) named by feed.postgres.passwordFile")
        }
        guard let user = u.user, !user.isEmpty else { throw FeedError(.badConfig, "feed.postgres.url: names no user (postgres://USER@HOST/DATABASE)") }
        let db = u.path.hasPrefix("/") ? String(u.path.dropFirst()) : u.path
        guard !db.isEmpty else { throw FeedError(.badConfig, "feed.postgres.url: names no database (postgres://USER@HOST/DATABASE)") }
        self.user = user
        database = db
        host = u.host ?? "localhost"
        port = u.port ?? 5432
        var mode = TLSMode.disable
        for item in u.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                switch item.value ?? "" {
                case "disable", "allow": mode = .disable
                case "prefer": mode = .prefer
                case "require": mode = .require
                case "verify-ca": mode = .verifyCA
                case "verify-full": mode = .verifyFull
                default: throw FeedError(.badConfig, "feed.postgres.url: sslmode=\(item.value ?? "") is not disable, prefer, require, verify-ca or verify-full")
                }
            case "host": socketDirectory = item.value
            default: throw FeedError(.badConfig, "feed.postgres.url: unknown parameter \(item.name) (known: sslmode, host)")
            }
        }
        if socketDirectory != nil, mode != .disable {
            throw FeedError(.badConfig, "feed.postgres.url: TLS (sslmode=\(mode.rawValue)) over a Unix socket is not supported; use a TCP host")
        }
        tls = mode
        guard schema.range(of: "^[a-z_][a-z0-9_]{0,62}$", options: .regularExpression) != nil else {
            throw FeedError(.badConfig, "feed.postgres.schema: \"\(schema)\" must be a plain identifier ([a-z_][a-z0-9_]*, at most 63)")
        }
        guard (1...10_000).contains(batchSize) else { throw FeedError(.badConfig, "feed.postgres.batchSize: must be 1 to 10000, not \(batchSize)") }
    }

    /// The password: the first line of `passwordFile`, which must not be readable by group or others.
    /// - Throws: `FeedError.badConfig` if it cannot be read or its mode is too open.
    public func password() throws -> String? {
        guard let passwordFile else { return nil }
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: passwordFile),
              let data = FileManager.default.contents(atPath: passwordFile) else {
            throw FeedError(.badConfig, "feed.postgres.passwordFile: cannot read \(passwordFile)")
        }
        let mode = (attrs[.posixPermissions] as? NSNumber)?.intValue ?? 0
        guard mode & 0o077 == 0 else {
            throw FeedError(.badConfig, String(format: "feed.postgres.passwordFile: %@ has mode %o; run `chmod 600 %@`", passwordFile, mode, passwordFile))
        }
        return String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
    }

    /// The postgres-nio connection configuration.
    public func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let pw = try password()
        if let dir = socketDirectory {
            return .init(unixSocketPath: "\(dir)/.s.PGSQL.\(port)", username: user, password: pw, database: database)
        }
        let tlsConfig: PostgresConnection.Configuration.TLS
        switch tls {
        case .disable: tlsConfig = .disable
        case .prefer, .require, .verifyCA:
            var t = TLSConfiguration.makeClientConfiguration()
            t.certificateVerification = tls == .verifyCA ? .noHostnameVerification : .none
            let ctx = try NIOSSLContext(configuration: t)
            tlsConfig = tls == .prefer ? .prefer(ctx) : .require(ctx)
        case .verifyFull:
            tlsConfig = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        var c = PostgresConnection.Configuration(host: host, port: port, username: user, password: pw, database: database, tls: tlsConfig)
        c.options.connectTimeout = .seconds(10)
        return c
    }

    /// Where it writes, for logs (no password: there is none in the URL).
    public var target: String { "\(url) schema \(schema)" }
}
