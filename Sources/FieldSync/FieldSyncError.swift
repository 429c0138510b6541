// The one error type of the app API: what was wrong, what to do, and its class (which the `fieldsync`
// CLI turns into its exit code). Every message is the one the CLI printed before this library existed.

import FieldSyncCore
import FieldSyncProtocol
import FieldSyncStore

/// An error of the app API. Its `message` says what was wrong and what to do.
///
/// ```swift
/// do { _ = try await app.close(id, feedback: nil) } catch {
///     if error.code == .notFound { print(error.message) }
/// }
/// ```
public struct FieldSyncError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The class of an error. The raw values are the exit codes of the `fieldsync` record commands
    /// (BSD sysexits, docs/cli.md "Exit codes").
    public enum Code: Int32, Sendable, Equatable {
        /// The operation failed: the store, the keystore, or the disk refused it.
        case failed = 1
        /// The request is wrong: a malformed id, an ambiguous prefix, an edit that means nothing.
        case usage = 64
        /// An argument is invalid before anything is opened (a text too long, an unknown category): the
        /// checks the CLI runs while parsing its command line. Exit code 64, like `usage`.
        case invalidArgument = 640
        /// The data is wrong: the schema refuses a value, a status cannot move that way.
        case data = 65
        /// The record (or an input file) does not exist.
        case notFound = 66
        /// This device may not do it: the scope is outside its certificate, or it holds no key for it.
        case permission = 77

        /// The exit code of the `fieldsync` command that meets this error.
        public var exitCode: Int32 { self == .invalidArgument ? 64 : rawValue }
    }

    /// The class of the error.
    public var code: Code
    /// What was wrong and what to do.
    public var message: String
    /// The schema field concerned, if any.
    public var field: String?

    /// Creates an error.
    public init(_ code: Code, _ message: String, field: String? = nil) {
        self.code = code
        self.message = message
        self.field = field
    }

    /// The message.
    public var description: String { message }

    /// Maps an error of the layers below to the app API's error, with the CLI's message.
    /// - Parameter error: any error; a `FieldSyncError` is returned as it is.
    public init(_ error: any Error) {
        switch error {
        case let e as FieldSyncError:
            self = e
        case let e as RecordError:
            let what = e.field.map { "field \"\($0)\": \(e.detail)" } ?? e.detail
            self.init(.data, "the schema refuses the edit: \(what); fix the value and retry", field: e.field)
        case let e as WriteError:
            self.init(.failed, "write refused: \(e.reason)")
        case let e as StoreError:
            self.init(.failed, "store: \(e)")
        case let e as Scope.Invalid:
            self.init(.usage, "\(e)")
        default:
            self.init(.failed, "\(error)")
        }
    }
}

/// Runs `body`, turning every error it throws into a `FieldSyncError`.
@inline(__always)
func mappingErrors<T>(_ body: () throws -> T) throws(FieldSyncError) -> T {
    do { return try body() } catch { throw FieldSyncError(error) }
}
