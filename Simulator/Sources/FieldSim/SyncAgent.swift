// The plug point between the engine and whatever runs on the nodes: the baselines today, the real
// FieldSyncProtocol sessions later. The engine owns time, contacts and links; an agent owns node state.

/// Which end of a contact: `a` (lower node index) or `b`.
public enum LinkSide: Int32, Sendable {
    /// The `a` end.
    case a = 0
    /// The `b` end.
    case b = 1
    /// The other end.
    @inline(__always) public var other: LinkSide { self == .a ? .b : .a }
}

/// An active contact as the agent sees it. `slot` is reused after the contact ends; `generation` tells
/// reuses apart. Agents key per-contact state (sessions) by `slot`.
public struct LinkHandle: Sendable, Equatable {
    /// Slot in the engine's contact table, `0..<maxSlots`.
    public var slot: Int32
    /// Incremented every time the slot is reused.
    public var generation: UInt32
    /// The contact's nodes, link class and speed.
    public var spec: ContactSpec
    /// When this contact came up.
    public var start: SimTime

    /// The node at `side`.
    @inline(__always) public func node(_ side: LinkSide) -> NodeIndex { side == .a ? spec.a : spec.b }
}

/// Message types for byte accounting.
public enum MessageType: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// Summary of what a node holds (ids, version vector, handshake): control bytes.
    case summary = 0
    /// One change.
    case change
    /// A full-state dump (full-state baseline).
    case stateDump
    /// Any other control message.
    case control
    /// Name used in outputs.
    public var description: String {
        switch self {
        case .summary: "summary"
        case .change: "change"
        case .stateDump: "state-dump"
        case .control: "control"
        }
    }
}

/// A transfer that a contact's end cut: the message, who sent it, and how many of its bytes had left the
/// sender when the contact ended (`bytesSent < size` for the message being transmitted, `== size` for
/// messages still propagating).
public struct CutTransfer<Message> {
    /// The message that did not arrive.
    public var message: Message
    /// The sending side.
    public var from: LinkSide
    /// Bytes of it that had been put on the link.
    public var bytesSent: Int
}

/// What an agent reports back to the engine during a call. The engine drains it after every call.
public struct AgentEffects: Sendable {
    /// Link directions that may now have something to send: the engine polls them if idle.
    public private(set) var wakes: [(slot: Int32, side: LinkSide)] = []
    /// Changes newly applied at a node: (node, change, hops from the author).
    public private(set) var accepted: [(node: NodeIndex, change: ChangeIndex, hops: HopCount)] = []
    /// Changes received that the node already held (wasted transfers).
    public private(set) var duplicates: Int = 0
    /// Changes dropped from a node (lost with the device, evicted).
    public private(set) var dropped: Int = 0
    /// Timers on live contacts: (slot, generation, due time).
    public private(set) var timers: [(slot: Int32, generation: UInt32, at: SimTime)] = []
    /// An invariant the agent found broken (the engine stops the run).
    public private(set) var violation: String?

    /// Creates an empty effects buffer.
    public init() {}

    /// Asks the engine to poll `side` of `slot` for a message if that direction is idle.
    public mutating func wake(_ slot: Int32, _ side: LinkSide) { wakes.append((slot, side)) }
    /// Reports that `node` applied `change` for the first time, `hops` links away from its author.
    public mutating func accept(_ change: ChangeIndex, at node: NodeIndex, hops: HopCount) {
        accepted.append((node, change, hops))
    }
    /// Asks the engine to call `timerFired` for `link` at `at`, if the contact is still up then.
    public mutating func setTimer(_ link: LinkHandle, at: SimTime) { timers.append((link.slot, link.generation, at)) }
    /// Reports a change received twice.
    public mutating func duplicate() { duplicates += 1 }
    /// Reports `count` changes dropped.
    public mutating func drop(_ count: Int) { dropped += count }
    /// Reports a broken invariant (for example a replica holding a change other than the one its author
    /// wrote): the engine stops the run after this event and reports it.
    public mutating func violate(_ what: String) { if violation == nil { violation = what } }

    mutating func clear() {
        wakes.removeAll(keepingCapacity: true)
        accepted.removeAll(keepingCapacity: true)
        timers.removeAll(keepingCapacity: true)
        duplicates = 0
        dropped = 0
    }
}

/// Read-only facts an agent may consult: the world, the changes written so far, each node's clock skew.
public final class SimContext {
    /// Nodes and entitlement.
    public let world: World
    /// Changes written so far.
    public let changes: ChangeTable
    /// Clock skew per node (ms); the local clock of node `n` reads `now + clockSkew[n]`.
    public let clockSkew: [SimTime]

    /// Creates a context.
    public init(world: World, changes: ChangeTable, clockSkew: [SimTime]) {
        precondition(clockSkew.count == world.count)
        self.world = world
        self.changes = changes
        self.clockSkew = clockSkew
    }

    /// What node `node`'s own clock reads at virtual time `now` (pass this to a session as its `now`).
    @inline(__always) public func localClock(_ node: NodeIndex, at now: SimTime) -> SimTime { now + clockSkew[Int(node)] }
}

/// What runs on the nodes: a sync protocol, or a baseline. The engine drives it; it never sees the engine.
///
/// Contract (all calls are synchronous, single-threaded, with virtual `now`):
/// 1. `changeCreated` when a node writes a change (the change is already in `context.changes`).
/// 2. `contactStarted` when a contact comes up; then the engine calls `pollTransmit` for each side.
/// 3. Whenever a direction of a link is idle, the engine calls `pollTransmit(link, from:)`; returning a
///    message puts it on the link: it occupies the direction for `wireSize / bytesPerSecond` and arrives
///    `latency` later. Returning nil leaves the direction idle until the agent `wake`s it.
/// 4. `received` when a message arrives, in order per direction, if it arrived no later than the end.
/// 5. `contactEnded` when the contact ends; `cut` lists what was on the link and did not arrive, with
///    the exact bytes sent: the transfer is cut exactly there.
/// 6. Faults: `nodeCrashed` (its contacts end first, with cuts), `nodeRestarted`, `nodeLost`.
///
/// The real `FieldSyncProtocol` session plugs in as an agent whose `Message` is a frame of bytes
/// (`[UInt8]`), `wireSize` its count, holding per node a `MemoryStore` and per contact slot two sans-IO
/// sessions (one per side); `contactStarted` creates them with `context.localClock(node, at: now)`,
/// `received` feeds the bytes to the far side's session, `pollTransmit` drains that side's
/// `pollTransmit()`, and `contactEnded` feeds each session the prefix `bytes[0..<bytesSent]` of a cut
/// frame (what the peer's socket would have read) followed by a close. `FieldSyncAgent` does exactly
/// this. See Simulator/README.md.
public protocol SyncAgent {
    /// What crosses a link: a frame of bytes for a real protocol, a small descriptor for a model.
    associatedtype Message

    /// Short name used in outputs (`ideal-epidemic`, `full-state`, `full-version-vector`, ...).
    var name: String { get }

    /// Bytes a message occupies on the link.
    static func wireSize(of message: Message) -> Int

    /// The type of a message for byte accounting.
    static func messageType(of message: Message) -> MessageType

    /// The change carried by a message, if it carries exactly one (for ONE-style started/relayed/aborted
    /// counts); nil for control messages and dumps.
    static func change(in message: Message) -> ChangeIndex?

    /// `message` with a bit flipped on the link (`LinkFaults.corrupt`), or nil to drop it. The default,
    /// for models without real bytes, returns it unchanged (TCP's checksum would catch the flip and the
    /// frame would be sent again); agents with real bytes flip a bit and let their protocol catch it.
    static func corrupted(_ message: Message, random: inout SimRandom) -> Message?

    /// Extra time the sender sits on `message` before it leaves (an adversarial relay that delays what it
    /// carries): the link direction stays busy for it, so later frames wait behind it. Default 0.
    static func holdTime(of message: Message) -> SimTime

    /// A node wrote `change`.
    mutating func changeCreated(_ change: ChangeIndex, at node: NodeIndex, now: SimTime, effects: inout AgentEffects)

    /// A contact came up.
    mutating func contactStarted(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects)

    /// The next message `side` sends on `link`, or nil if it has nothing to send now.
    mutating func pollTransmit(_ link: LinkHandle, from side: LinkSide, now: SimTime) -> Message?

    /// `message` arrived at `side` of `link`.
    mutating func received(_ message: Message, on link: LinkHandle, at side: LinkSide, now: SimTime,
                           effects: inout AgentEffects)

    /// The contact ended; `cut` lists what was on the link and did not arrive.
    mutating func contactEnded(_ link: LinkHandle, now: SimTime, cut: [CutTransfer<Message>], effects: inout AgentEffects)

    /// A node crashed (after its contacts were ended).
    mutating func nodeCrashed(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects)

    /// A node restarted.
    mutating func nodeRestarted(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects)

    /// A node was lost for good (after its contacts were ended); its store is gone.
    mutating func nodeLost(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects)

    /// A timer set with `AgentEffects.setTimer` is due and its contact is still up.
    mutating func timerFired(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects)

    /// The engine injected a link fault (`LinkFaults`) into `message` on `link`: it arrives twice, or corrupted
    /// (called as it arrives), or behind the next frame (called as it is held back). For the checks that must
    /// tell a session the faults killed from one the protocol failed. Default: nothing.
    mutating func linkFault(_ message: Message, on link: LinkHandle, now: SimTime)

    /// Whether `node` holds `change` now (for convergence, staleness and divergence checks).
    func holds(_ change: ChangeIndex, at node: NodeIndex) -> Bool

    /// Bytes of changes stored at `node` now.
    func storedBytes(at node: NodeIndex) -> Int
}

extension SyncAgent {
    /// Default: a corrupted frame is sent again intact (see the requirement).
    public static func corrupted(_ message: Message, random: inout SimRandom) -> Message? { message }

    /// Default: no message is held.
    public static func holdTime(of message: Message) -> SimTime { 0 }

    /// Default: agents that set no timers ignore them.
    public mutating func timerFired(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects) {}

    /// Default: ignored.
    public mutating func linkFault(_ message: Message, on link: LinkHandle, now: SimTime) {}
}
