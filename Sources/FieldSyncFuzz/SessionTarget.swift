import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol

// The session state machine fed arbitrary messages after a real Noise XX handshake (docs/fuzzing.md).
//
// Two enrolled devices of one test network: A, the node under test (a station), and B, its peer (a
// backpack unit of the same station), whose side the fuzzer plays. Their handshake runs once, for
// real (`SessionHandshake`, the code nodes use, with fixed ephemeral keys so that it is the same every
// time); each execution then gives a fresh `SyncSession` for A (fresh replicator, store and trust
// store) a handshake that replays the recorded states of that real handshake, so that the X25519 and
// certificate work is not repeated ten million times. After the handshake, the fuzzer's bytes are the
// plaintexts of B's transport messages, each sealed with B's real transport keys and framed: they
// reach the session's message decoder, reconciliation, batch verification and the store, as a
// malicious enrolled peer's messages would.

/// The fixed test network and the recorded handshake, built once per process.
final class SessionFixture: @unchecked Sendable {
    static let now: UInt64 = 1_717_200_000_000
    static let day: UInt64 = 86_400_000
    static let network = NetworkParameters(networkID: "longnan-police")
    static let station = try! Scope("longnan/wudu/station-017")

    let root: Ed25519.SecretKey
    let a: DeviceIdentity
    let b: DeviceIdentity
    let epochKey: EpochKey
    /// A's handshake states: before message 1, after writing it, after reading message 2, after writing
    /// message 3 (complete); and the three messages.
    let aStates: [SessionHandshake]
    let messages: [[UInt8]]
    /// B's transport after the handshake (B's half of the real handshake).
    let bTransport: NoiseTransport
    /// A's transport after the handshake (opens what B's session sends when the seeds are recorded).
    let aTransport: NoiseTransport

    static let shared = SessionFixture()

    static func secret(_ label: UInt8) -> SecretBytes {
        SecretBytes(copying: (0..<32).map { UInt8(truncatingIfNeeded: Int($0) &* 7 &+ Int(label)) })
    }

    static func device(_ label: UInt8, role: Role, by authority: Authority, serial: UInt64) -> DeviceIdentity {
        let sk = try! Ed25519.SecretKey(seed: secret(label))
        let xk = try! X25519.SecretKey(secret: secret(label &+ 100))
        let request = try! EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: [station],
                                             createdAt: now, label: "fuzz-\(label)")
        let cert = try! authority.enroll(request, role: role, scopes: [station], notBefore: now - day, notAfter: now + 365 * day, serial: serial)
        return DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert)
    }

    private init() {
        root = try! Ed25519.SecretKey(seed: Self.secret(1))
        let hq = Authority(root: root)
        a = Self.device(2, role: .station, by: hq, serial: 1)
        b = Self.device(3, role: .backpack, by: hq, serial: 2)
        epochKey = try! EpochKey(scope: Self.station, epoch: 1, key: Self.secret(4))
        let trust = TrustStore(root: root.publicKey)
        var ha = SessionHandshake(initiator: true, identity: a, trust: trust, network: Self.network,
                                  ephemeral: try! X25519.SecretKey(secret: Self.secret(5)))
        var hb = SessionHandshake(initiator: false, identity: b, trust: trust, network: Self.network,
                                  ephemeral: try! X25519.SecretKey(secret: Self.secret(6)))
        var states = [ha]
        let m1 = try! ha.write()
        states.append(ha)
        try! hb.read(m1, now: Self.now)
        let m2 = try! hb.write()
        try! ha.read(m2, now: Self.now)
        states.append(ha)
        let m3 = try! ha.write()
        states.append(ha)
        try! hb.read(m3, now: Self.now)
        precondition(ha.isComplete && hb.isComplete, "the fixture's handshake did not complete")
        aStates = states
        messages = [m1, m2, m3]
        bTransport = try! hb.transport()
        aTransport = try! ha.transport()
    }

    /// A fresh replicator for A over an empty memory store, holding the station's epoch key.
    func replicatorA() -> Replicator {
        let r = Replicator(identity: a, trust: TrustStore(root: root.publicKey), store: MemoryStore())
        r.addKey(epochKey)
        return r
    }

    /// A fresh session for A (the initiator) whose handshake replays the recorded real one.
    /// - Parameter preparesElsewhere: A hands its batches out for preparation, as a node does
    ///   (`SessionConfiguration.preparesBatchesElsewhere`), instead of verifying them on the spot.
    func sessionA(live: Bool, replicator: Replicator? = nil, preparesElsewhere: Bool = false) -> SyncSession {
        var config = SessionConfiguration(network: Self.network, salt: Array(0..<16))
        config.live = live
        config.preparesBatchesElsewhere = preparesElsewhere
        return SyncSession(initiator: true, replicator: replicator ?? replicatorA(), configuration: config, now: Self.now,
                           handshake: ReplayedHandshake(fixture: self))
    }
}

/// A's side of the fixture's real handshake, replayed: each step moves to the state the real handshake
/// had after the same step, as long as the peer sends the recorded message 2; anything else is read by
/// the real handshake state (and fails as it would).
struct ReplayedHandshake: SessionHandshaking {
    let fixture: SessionFixture
    var step = 0
    var state: SessionHandshake

    init(fixture: SessionFixture) {
        self.fixture = fixture
        state = fixture.aStates[0]
    }

    var isComplete: Bool { state.isComplete }
    var isInitiator: Bool { true }
    var handshakeHash: [UInt8] { state.handshakeHash }
    var peer: Certificate? { state.peer }
    var peerChain: [Certificate] { state.peerChain }
    var shouldWrite: Bool { state.shouldWrite }

    mutating func write() throws(SessionError) -> [UInt8] {
        switch step {
        case 0:
            step = 1
            state = fixture.aStates[1]
            return fixture.messages[0]
        case 2:
            step = 3
            state = fixture.aStates[3]
            return fixture.messages[2]
        default:
            step = -1
            return try state.write()
        }
    }

    mutating func read(_ message: [UInt8], now: UInt64) throws(SessionError) {
        if step == 1, message == fixture.messages[1] {
            step = 2
            state = fixture.aStates[2]
            return
        }
        step = -1
        try state.read(message, now: now)
    }

    /// After the replayed message 3 the state is the recorded one, whose transport keys the fixture split
    /// once (`aTransport`, a value: each session gets its own copy, nonces at zero); the split (HKDF) was
    /// about 4 % of the target's time when every execution repeated it.
    func transport() throws(SessionError) -> NoiseTransport {
        if step == 3 { return fixture.aTransport }
        return try state.transport()
    }
}

/// The input of the session target: a flags byte, then B's messages, each `u16 big-endian length ‖
/// plaintext` (a plaintext longer than a transport message allows is cut). Flags: bit 0, A asks for
/// live mode; bit 1, A hands its batches out for preparation as a node does (the node's worker is played
/// by the target: `BatchPreparation.prepare()` on the same thread), and then bit 2, the preparations
/// out are handed back together in one call, newest first (`completeBatchPreparations`, as a node
/// whose loop was busy does; else one call each, oldest first), and bit 3, they are handed back only
/// once three are out or B has no more messages (else after each of B's messages).
public enum SessionInput {
    /// Encodes B's plaintexts as a session-target input.
    public static func encode(live: Bool, messages: [[UInt8]]) -> [UInt8] {
        encode(flags: live ? 1 : 0, messages: messages)
    }

    /// Encodes B's plaintexts as a session-target input with the given flags byte.
    public static func encode(flags: UInt8, messages: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = [flags]
        for m in messages {
            let n = min(m.count, 0xFFFF)
            out += [UInt8(n >> 8), UInt8(n & 0xFF)]
            out += m.prefix(n)
        }
        return out
    }
}

/// The session target: A's session completes the handshake, then receives B's messages from the input.
/// Every message A sends back is opened with B's keys (it must decrypt: A never sends garbage), and
/// after each message the session must either go on or end with a typed failure; nothing traps.
public func fuzzSession(_ data: UnsafeRawBufferPointer) {
    _ = runSession(data)
}

/// Runs the session target; returns how many changes A's store holds at the end. `sent` sees every
/// transport message A sent after the handshake, opened with B's keys.
func runSession(_ data: UnsafeRawBufferPointer, sent: (([UInt8]) -> Void)? = nil) -> Int {
    runSessionProbed(data, sent: sent).stored
}

/// Runs the session target; returns how many changes A's store holds at the end and how many store
/// transactions committed more than one batch (`SyncSession.groupCommits`).
func runSessionProbed(_ data: UnsafeRawBufferPointer, sent: (([UInt8]) -> Void)? = nil) -> (stored: Int, groupCommits: Int) {
    guard let flags = data.first else { return (0, 0) }
    let fixture = SessionFixture.shared
    let replicator = fixture.replicatorA()
    let elsewhere = flags & 2 != 0, together = flags & 4 != 0, holdBack = flags & 8 != 0
    let session = fixture.sessionA(live: flags & 1 == 1, replicator: replicator, preparesElsewhere: elsewhere)
    var outstanding: [BatchPreparation] = []  // handed out for preparation, not back yet
    var bSend = fixture.bTransport
    var bReceive = fixture.bTransport
    var bDecoder = FrameDecoder()
    var now = SessionFixture.now
    var closes = 0  // `closed` events: exactly one once the session is closed
    func drain(_ out: SessionOutput) {
        for frame in out.frames {
            bDecoder.append(frame.bytes)
        }
        while let body = try? bDecoder.next() {
            if body == fixture.messages[0] || body == fixture.messages[2] { continue }
            do { sent?(try bReceive.open(body)) } catch {
                FuzzFinding.fail("session", "A sent a transport message B cannot open: \(error)")
            }
        }
        closes += out.events.filter { if case .closed = $0 { true } else { false } }.count
        if !out.preparations.isEmpty {
            if !elsewhere { FuzzFinding.fail("session", "batches handed out for preparation by a session that prepares them itself") }
            outstanding += out.preparations
        }
    }
    // The node's worker: prepares what is out and hands it back (what the handing back sends out in turn,
    // more batches read from held frames among it, is prepared and handed back too).
    func handBack(now: UInt64) {
        while !outstanding.isEmpty {
            let batches = outstanding
            outstanding = []
            let results = batches.map { (ticket: $0.ticket, batch: $0.prepare()) }
            if together {
                drain(session.completeBatchPreparations(results.reversed(), now: now))
            } else {
                for r in results { drain(session.completeBatchPreparation(ticket: r.ticket, r.batch, now: now)) }
            }
        }
    }
    // The handshake: A writes message 1 when it starts; B's message 2 completes it on A's side.
    drain(session.start())
    drain(session.receive(FrameDecoder.frame(fixture.messages[1]), now: now))
    guard !session.hasFailed else { FuzzFinding.fail("session", "the replayed handshake failed: \(String(describing: session.failure))") }
    var i = 1
    while i + 2 <= data.count, !session.hasFailed, !session.isFinished {
        let n = Int(data[i]) << 8 | Int(data[i + 1])
        i += 2
        let end = min(data.count, i + n)
        let plaintext = Array(data[i..<end].prefix(NoiseTransport.maxPlaintext))
        i = end
        guard let sealed = try? bSend.seal(plaintext) else { FuzzFinding.fail("session", "B cannot seal \(plaintext.count) bytes") }
        drain(session.receive(FrameDecoder.frame(sealed), now: now))
        if !holdBack || outstanding.count >= 3 { handBack(now: now) }
        now += 1_000
        if session.isLive { drain(session.push(now: now)) }
    }
    handBack(now: now)
    if closes != (session.isClosed ? 1 : 0) { FuzzFinding.fail("session", "\(closes) closed event(s) for a session \(session.isClosed ? "closed" : "open")") }
    drain(session.connectionClosed())
    if closes != 1 { FuzzFinding.fail("session", "\(closes) closed event(s) after the connection closed") }
    if !outstanding.isEmpty { FuzzFinding.fail("session", "a closed session handed out \(outstanding.count) batch(es) for preparation") }
    let held = (try? replicator.store.holdings()) ?? [:]
    return (Int(held.values.reduce(0) { $0 + $1.count }), session.groupCommits)
}

/// What a session-target input does to A, for tests that check the target reaches deep code.
public enum FuzzProbe {
    /// How many changes A's store holds after the input (run as the target runs it, without traps).
    public static func changesStored(bySessionInput input: [UInt8]) -> Int {
        var stored = 0
        input.withUnsafeBytes { stored = runSession($0) }
        return stored
    }

    /// How many changes A's store holds after the input, and in how many store transactions it
    /// committed more than one batch (flags bits 1 and 2: group commit of batches prepared elsewhere).
    public static func commits(bySessionInput input: [UInt8]) -> (stored: Int, groupCommits: Int) {
        var result = (stored: 0, groupCommits: 0)
        input.withUnsafeBytes { result = runSessionProbed($0) }
        return result
    }

    /// What A sends B in answer to a session-target input: the plaintexts of its transport messages after
    /// the handshake, in order, and how many changes its store holds at the end. Each execution starts
    /// from the same fixture, so the same input gives the same answer whatever ran before it.
    public static func answer(toSessionInput input: [UInt8]) -> (sent: [[UInt8]], stored: Int) {
        var sent: [[UInt8]] = []
        var stored = 0
        input.withUnsafeBytes { stored = runSession($0) { sent.append($0) } }
        return (sent, stored)
    }
}
