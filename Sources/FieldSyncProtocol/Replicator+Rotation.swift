import FieldSyncCore
import FieldSyncCrypto

/// What a scheduled rotation of one scope's epoch key would do, worked out from what a node holds
/// (`Replicator.rotationPlan`): attack case 31, docs/enrollment.md "Scheduled rotation".
public struct RotationPlan: Sendable {
    /// The scope.
    public var scope: Scope
    /// The newest epoch this node knows of the scope (from the grants it holds and the keys it has; 0 if
    /// none): the rotation issues `currentEpoch + 1`.
    public var currentEpoch: UInt32
    /// When the newest grant of `currentEpoch` held was signed (nil: no grant of it is held, e.g. the
    /// key came from a key file).
    public var lastIssuedAt: UInt64?
    /// Whether a rotation is due (no age limit given, the age is unknown, or it is at least the limit).
    public var due: Bool
    /// The members of the new epoch: the members of the grants of `currentEpoch`, by their newest
    /// certificate this node knows, valid now and not revoked.
    public var members: [Certificate]
    /// Members of the current epoch left out, and why (revoked, expired, certificate unknown here, relay).
    public var leftOut: [(device: DeviceID, reason: String)]
}

extension Replicator {
    /// Works out the scheduled rotation of `scope`'s epoch key: the epoch to replace, when its grant was
    /// signed, whether a rotation is due at `now` given `olderThan` (ms; nil: always), and the members to
    /// carry over (no membership change: the current members, minus any that are revoked, expired or a
    /// relay). Pure apart from reading the store's control changes; `now` is passed in.
    /// - Throws: store errors.
    public func rotationPlan(for scope: Scope, now: UInt64, olderThan: UInt64?) throws -> RotationPlan {
        var grants: [KeyGrant] = []
        for stored in try store.controlChanges() where stored.contentType == .keyGrant {
            guard let change = try? Change(canonicalBytes: stored.bytes), let g = try? KeyGrant(canonicalBytes: change.payload),
                  g.scope == scope, (try? g.verify(trust: trust)) != nil else { continue }
            grants.append(g)
        }
        let current = max(grants.map(\.epoch).max() ?? 0, keys[scope]?.last?.epoch ?? 0)
        let ofCurrent = grants.filter { $0.epoch == current }
        let lastIssuedAt = ofCurrent.map(\.issuedAt).max()
        let due = olderThan.map { limit in lastIssuedAt.map { now < $0 || now - $0 >= limit } ?? true } ?? true
        var members: [Certificate] = []
        var leftOut: [(device: DeviceID, reason: String)] = []
        let ids = Set(ofCurrent.flatMap { $0.members.map(\.device) })
        for id in ids.sorted() {
            guard let v = certificates[id] else {
                leftOut.append((id, "its certificate is not held here (give it with --member)"))
                continue
            }
            if let r = trust.revocation(of: v.certificate) {
                leftOut.append((id, "revoked at \(r.revokedAt) (\(r.reason))"))
            } else if (try? v.checkValidity(at: now, skew: trust.clockSkewMilliseconds)) == nil {
                leftOut.append((id, "its certificate is not valid now"))
            } else if v.certificate.role == .relay {
                leftOut.append((id, "relays never hold keys"))
            } else {
                members.append(v.certificate)
            }
        }
        return RotationPlan(scope: scope, currentEpoch: current, lastIssuedAt: lastIssuedAt, due: due, members: members, leftOut: leftOut)
    }
}
