// LAN discovery over UDP: sends this node's beacon every few seconds and reports nodes heard on the same
// LAN segment. The bytes and the bookkeeping are FieldSyncProtocol's `BeaconCodec` and
// `DiscoveryTable`; this file only owns the socket and the timer. Spec: Protocols/discovery.md.

import FieldSyncCrypto
import Logging
import FieldSyncProtocol
import NIOCore
import NIOPosix

/// Where and how often beacons go.
public struct DiscoveryConfiguration: Sendable, Equatable {
    /// UDP port beacons are sent to and heard on (the same on every node of a network).
    public var port = 7946
    /// Local address the UDP socket binds to (`0.0.0.0` hears broadcasts on every interface).
    public var bindHost = "0.0.0.0"
    /// Where beacons are sent: a broadcast address (default, any LAN), a multicast group (224.0.0.0/4,
    /// joined on bind), or one unicast address.
    public var destination = "255.255.255.255"
    /// Mean time between beacons; each interval is jittered by ±25% so nodes started together do not
    /// send in lockstep.
    public var interval: TimeAmount = .seconds(5)
    /// A peer not heard for this long is forgotten.
    public var expiry: TimeAmount = .seconds(30)
    /// Whether this node sends beacons. A node that only connects out (a backpack unit) may listen only.
    public var announce = true

    /// Creates the default configuration.
    public init() {}

    /// Whether `destination` is an IPv4 multicast group (224.0.0.0/4).
    public var isMulticast: Bool {
        guard let first = destination.split(separator: ".").first, let octet = Int(first) else { return false }
        return (224...239).contains(octet)
    }
}

/// Sends and hears LAN beacons for one node.
///
/// ```swift
/// let discovery = LANDiscovery(configuration: config, codec: codec, announcePort: 7000,
///                              eventLoop: node.loop) { peer in scheduler.addPeer(peer) }
/// try await discovery.start()
/// ...
/// await discovery.stop()
/// ```
/// Everything runs on `eventLoop` (the node's loop), and so does `onPeer`.
public final class LANDiscovery: Sendable {
    /// Tunables.
    public let configuration: DiscoveryConfiguration
    /// The loop the socket, the timer, the table and `onPeer` run on.
    public let eventLoop: any EventLoop
    private let announcePort: UInt16?
    private let table: NIOLoopBoundBox<DiscoveryTable>
    private let channel: NIOLoopBoundBox<(any Channel)?>
    private let timer: NIOLoopBoundBox<Scheduled<Void>?>
    private let logLimiter: NIOLoopBoundBox<LogRateLimiter>
    private let onPeer: @Sendable (DiscoveredPeer) -> Void
    private let onPeerLost: @Sendable (DiscoveredPeer) -> Void
    private let log: @Sendable (String) -> Void

    /// Creates discovery for a node listening on `announcePort` (nil: listen for beacons only).
    /// - Parameters:
    ///   - onPeer: called on `eventLoop` with each peer heard that was not present before.
    ///   - onPeerLost: called on `eventLoop` with each peer not heard within `expiry` (checked at every
    ///     beacon interval).
    public init(configuration: DiscoveryConfiguration, codec: BeaconCodec, announcePort: Int?,
                eventLoop: any EventLoop, log: @escaping @Sendable (String) -> Void = { _ in },
                onPeerLost: @escaping @Sendable (DiscoveredPeer) -> Void = { _ in },
                onPeer: @escaping @Sendable (DiscoveredPeer) -> Void) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.announcePort = announcePort.flatMap { UInt16(exactly: $0) }
        let expiry = UInt64(max(0, configuration.expiry.nanoseconds / 1_000_000))
        table = NIOLoopBoundBox.makeBoxSendingValue(DiscoveryTable(codec: codec, expiry: expiry), eventLoop: eventLoop)
        channel = NIOLoopBoundBox.makeBoxSendingValue(nil, eventLoop: eventLoop)
        timer = NIOLoopBoundBox.makeBoxSendingValue(nil, eventLoop: eventLoop)
        logLimiter = NIOLoopBoundBox.makeBoxSendingValue(LogRateLimiter(), eventLoop: eventLoop)
        self.onPeer = onPeer
        self.onPeerLost = onPeerLost
        self.log = log
    }

    /// Binds the UDP socket (joining the multicast group if the destination is one) and starts sending
    /// beacons if `announce` is set and a port was given.
    /// - Throws: `NodeError` if the socket cannot be bound or the destination is not an IPv4 address.
    public func start() async throws {
        let config = configuration
        let destination: SocketAddress
        do { destination = try SocketAddress(ipAddress: config.destination, port: config.port) } catch {
            throw NodeError("discovery destination \(config.destination) is not an IPv4 address: \(error)")
        }
        let handler = BeaconHandler(discovery: self)
        let bootstrap = DatagramBootstrap(group: eventLoop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.so_broadcast), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
        let bound: any Channel
        do {
            bound = try await bootstrap.bind(host: config.bindHost, port: config.port).get()
        } catch {
            throw NodeError("cannot bind discovery to UDP \(config.bindHost):\(config.port): \(error); "
                + "set discovery.port to a free port or disable discovery")
        }
        if config.isMulticast {
            guard let multicast = bound as? any MulticastChannel else {
                try? await bound.close()
                throw NodeError("this platform's UDP channel cannot join multicast groups; use a broadcast destination")
            }
            do { try await multicast.joinGroup(destination).get() } catch {
                try? await bound.close()
                throw NodeError("cannot join multicast group \(config.destination): \(error)")
            }
        }
        let box = channel
        try await eventLoop.submit { [self] in
            box.value = bound
            tick(destination: destination)
        }.get()
    }

    /// Stops sending and closes the socket.
    public func stop() async {
        let (box, timerBox) = (channel, timer)
        let open: (any Channel)? = try? await eventLoop.submit { () -> (any Channel)? in
            timerBox.value?.cancel()
            timerBox.value = nil
            defer { box.value = nil }
            return box.value
        }.get()
        try? await open?.close()
    }

    /// The peers currently present (heard within `expiry`), sorted. Reading does not forget anyone:
    /// forgetting is the timer's, which reports each lost peer through `onPeerLost`.
    public func peers() async throws -> [DiscoveredPeer] {
        let (box, now) = (table, Self.milliseconds)
        return try await eventLoop.submit { box.value.present(now: now()) }.get()
    }

    /// Counters: beacons accepted from others, datagrams rejected, own beacons heard back.
    public func counters() async throws -> (accepted: Int, rejected: Int, own: Int) {
        let box = table
        return try await eventLoop.submit { (box.value.accepted, box.value.rejected, box.value.own) }.get()
    }

    // MARK: - On the loop

    /// Every (jittered) interval: send a beacon if announcing, and report peers that went quiet.
    private func tick(destination: SocketAddress) {
        eventLoop.preconditionInEventLoop()
        guard let channel = channel.value else { return }
        if configuration.announce, let port = announcePort {
            let bytes = table.value.makeBeacon(port: port, nonce: SecureRandom.bytes(16))
            let envelope = AddressedEnvelope(remoteAddress: destination, data: channel.allocator.buffer(bytes: bytes))
            channel.writeAndFlush(envelope).whenFailure { [log] error in log("discovery: cannot send a beacon to \(destination): \(error)") }
        }
        let now = Self.milliseconds()
        for peer in table.value.expire(now: now) {
            limitedLog(peer.host, now: now, "discovery: lost \(peer)")
            onPeerLost(peer)
        }
        let base = configuration.interval.nanoseconds
        let jittered = base * 3 / 4 + Int64.random(in: 0...max(1, base / 2))
        timer.value = eventLoop.scheduleTask(in: .nanoseconds(jittered)) { [self] in tick(destination: destination) }
    }

    /// Records that a session to `peer` authenticated: its beacons keep precedence over unproven ones
    /// (`DiscoveryTable.markProven`). Safe from any thread.
    public func markProven(_ peer: DiscoveredPeer) {
        let box = table
        eventLoop.execute { box.value.markProven(peer, now: Self.milliseconds()) }
    }

    fileprivate func received(_ bytes: [UInt8], from host: String) {
        eventLoop.preconditionInEventLoop()
        let now = Self.milliseconds()
        switch table.value.receive(bytes, from: host, now: now) {
        case let .new(peer):
            limitedLog(host, now: now, "discovery: found \(peer)")
            onPeer(peer)
        case let .replaced(peer, evicted):
            limitedLog(host, now: now, "discovery: found \(peer) again (proven); forgetting \(evicted) to make room")
            onPeerLost(evicted)
            onPeer(peer)
        case .full:
            limitedLog(host, now: now, "discovery: table full, ignoring a beacon from \(host)")
        case .sourceFull:
            limitedLog(host, now: now, "discovery: \(host) already announces \(table.value.perSource) peers, ignoring another")
        case .refreshed, .own, .rejected:
            break
        }
    }

    /// Logs a line caused by a beacon from `host`, at most a few per minute per source address.
    private func limitedLog(_ host: String, now: UInt64, _ line: String) {
        guard case let .log(suppressed) = logLimiter.value.check(host, now: now) else { return }
        log(suppressed > 0 ? "\(line) (\(suppressed) similar line(s) from \(host) suppressed)" : line)
    }

    private static func milliseconds() -> UInt64 { UInt64(NIODeadline.now().uptimeNanoseconds / 1_000_000) }
}

/// Feeds received datagrams to the discovery on the loop.
private final class BeaconHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let discovery: LANDiscovery

    init(discovery: LANDiscovery) { self.discovery = discovery }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.data.readableBytes <= 512, let host = envelope.remoteAddress.ipAddress else { return }
        discovery.received(Array(envelope.data.readableBytesView), from: host)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A UDP read error (e.g. ICMP port unreachable on a unicast destination) is not fatal.
    }
}

extension NodeDaemon {
    /// Starts LAN discovery for this daemon: beacons announce `announcePort` (the listener's port; nil:
    /// listen only), peers heard are added as `.discovered` (a contact sync starts at once), peers gone
    /// quiet are removed (a configured peer never is). The beacon key binds the node's network and root.
    /// Stop it with `LANDiscovery.stop()` before shutting the daemon down.
    /// - Parameter secret: the optional shared discovery secret (1...64 bytes).
    public func startDiscovery(_ configuration: DiscoveryConfiguration, secret: SecretBytes? = nil,
                               announcePort: Int?) async throws -> LANDiscovery {
        let root = try await node.withReplicator { $0.trust.root }
        let codec = try BeaconCodec(networkID: node.configuration.network.networkID, root: root, secret: secret)
        let logger = node.logger
        let discovery = LANDiscovery(
            configuration: configuration, codec: codec, announcePort: announcePort, eventLoop: node.loop,
            log: { logger.info("\($0)") },
            onPeerLost: { [self] peer in removePeer(host: peer.host, port: peer.port, onlyIf: .discovered) },
            onPeer: { [self] peer in addPeer(host: peer.host, port: peer.port, source: .discovered) })
        try await discovery.start()
        watchProven(discovery)
        return discovery
    }
}
