// Seeded libsodium randomness for the simulation thread, so runs of the real protocol are reproducible.
//
// Every random draw of FieldSyncCrypto (change and key-slot nonces, Noise ephemeral keys) goes through
// libsodium's `randombytes_buf`. `SeededSodium.run(seed:)` makes the calling thread draw from a
// ChaCha20 keystream keyed by the seed instead, for the duration of the closure; every other thread
// keeps drawing from libsodium's own generator (`randombytes_internal_implementation`, its default on
// Linux). The primitives are the real ones; only their entropy source is replaced, and only on the
// thread running the simulation. This makes same-seed runs byte-identical, ciphertext included.
//
// The replacement is installed once per process with `randombytes_set_implementation` (a pointer swap;
// libsodium documents it for use before `sodium_init`, and it is done at most once, on first use).
// Never use this outside the simulator: seeded randomness is not secret.

import CSodium
import Foundation

/// Thread-scoped seeded randomness for libsodium (see the file comment).
public enum SeededSodium {
    private final class Stream {
        var key: [UInt8]
        var counter: UInt64 = 0
        init(key: [UInt8]) { self.key = key }
        func fill(_ p: UnsafeMutableRawPointer, _ n: Int) {
            var nonce = withUnsafeBytes(of: counter.littleEndian) { Array($0) }
            counter += 1
            _ = crypto_stream_chacha20(p.assumingMemoryBound(to: UInt8.self), UInt64(n), &nonce, key)
        }
    }

    private nonisolated(unsafe) static var threadKey = pthread_key_t()
    /// libsodium's default generator (looked up by symbol: Swift 6 forbids naming a C global `var`).
    private static let fallback: randombytes_implementation = {
        guard let p = dlsym(nil, "randombytes_internal_implementation") else {
            fatalError("libsodium has no randombytes_internal_implementation")
        }
        return p.assumingMemoryBound(to: randombytes_implementation.self).pointee
    }()
    private static let installed: Bool = {
        pthread_key_create(&threadKey, nil)
        _ = fallback
        let impl = UnsafeMutablePointer<randombytes_implementation>.allocate(capacity: 1)
        impl.initialize(to: randombytes_implementation(
            implementation_name: { UnsafeRawPointer(("fieldsim-seeded" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self) },
            random: {
                var v: UInt32 = 0
                withUnsafeMutableBytes(of: &v) { SeededSodium.buf($0.baseAddress!, 4) }
                return v
            },
            stir: { SeededSodium.fallback.stir?() },
            uniform: nil,
            buf: { p, n in SeededSodium.buf(p!, n) },
            close: { SeededSodium.fallback.close?() ?? 0 }
        ))
        _ = sodium_init()
        randombytes_set_implementation(impl)
        return true
    }()

    private static func buf(_ p: UnsafeMutableRawPointer, _ n: Int) {
        if let s = pthread_getspecific(threadKey) {
            Unmanaged<Stream>.fromOpaque(s).takeUnretainedValue().fill(p, n)
        } else {
            fallback.buf(p, n)
        }
    }

    /// Runs `body` with this thread's libsodium randomness drawn from a keystream derived from `seed`.
    public static func run<T>(seed: UInt64, _ body: () throws -> T) rethrows -> T {
        precondition(installed)
        var r = SimRandom(seed: seed, 0x50D1_0000)
        let stream = Stream(key: (0..<32).map { _ in UInt8(r.int(256)) })
        let previous = pthread_getspecific(threadKey)
        let box = Unmanaged.passRetained(stream)
        pthread_setspecific(threadKey, box.toOpaque())
        defer {
            pthread_setspecific(threadKey, previous)
            box.release()
        }
        return try body()
    }
}
