import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import FieldSyncTestSupport
import Foundation
import Testing

/// The app API's typed writes, refusals, queries, prefix lookup and history, tested on the library directly.
@Suite(.ownThread) struct RecordBookTests {
    /// Every typed incident and visit write, through `FieldSyncApp`, and the record each leaves.
    @Test(.timeLimit(.minutes(2))) func typedWritesLeaveTheRecordsTheCLIWould() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let app = try await FieldSyncApp.open(device: try f.device("bp17"), configuration: AppFixtures.configuration)
        let created = try await app.createIncident(AppFixtures.draft("Car in ditch", priority: .high))
        #expect(created.change?.header.seq == 1 && created.previous == nil)
        #expect(created.change?.header.priority == .high)
        let id = created.record.id.description
        let prefix = String(id.prefix(8))

        let dispatched = try await app.setStatus(prefix, to: .dispatched)
        #expect(try Incident(dispatched.record).status == .dispatched)
        #expect(try Incident(#require(dispatched.previous)).status == .reported)
        let again = try await app.setStatus(id, to: .dispatched)
        #expect(again.change == nil, "already dispatched: nothing written")

        let assigned = try await app.assign(prefix, units: ["car-2", "car-5"])
        #expect(Set(try Incident(assigned.record).assignedUnits) == ["car-2", "car-5"])
        let unassigned = try await app.assign(prefix, units: [], remove: ["car-5"])
        #expect(try Incident(unassigned.record).assignedUnits == ["car-2"])
        #expect(try await app.assign(prefix, units: ["car-2"]).change == nil)

        _ = try await app.addNote(prefix, "driver unhurt")
        _ = try await app.giveFeedback(prefix, "tow truck called")
        let closed = try await app.close(prefix, feedback: "road clear")
        let incident = try Incident(closed.record)
        #expect(incident.status == .closed && incident.feedback == "road clear")
        #expect(incident.notes.map(\.text) == ["driver unhurt"])
        let reopened = try await app.reopen(prefix, note: "car back in the ditch")
        #expect(try Incident(reopened.record).status == .reported && Incident(reopened.record).generation == 1)

        let other = try await app.createIncident(AppFixtures.draft("Same car, second call"))
        let dup = try await app.markDuplicate(other.record.id.description, of: prefix)
        #expect(try Incident(dup.record).duplicateOf == created.record.id)

        var update = IncidentUpdate()
        update.priority = .urgent
        update.location = LocationChange(place: "Wudu bridge")
        let updated = try await app.updateIncident(prefix, update)
        #expect(updated.change?.header.priority == .urgent, "an incident's change travels at its new priority")
        #expect(try Incident(updated.record).location.placeName == "Wudu bridge")

        let visit = try await app.createVisit(VisitDraft(scope: AppFixtures.village, subject: "household 0412-07", visitor: "officer Li",
                                                         visitType: .routine, tags: ["elderly"]))
        var vu = VisitUpdate()
        vu.addTags = ["elderly", "follow-up"]
        vu.outcome = "all well"
        let visitUpdated = try await app.updateVisit(visit.record.id.description, vu)
        #expect(Set(visitUpdated.record.elements(Visit.Field.tags)) == ["elderly", "follow-up"])
        let noted = try await app.addNote(visit.record.id.description, "tea offered", kind: .visit)
        #expect(noted.record.notes(Visit.Field.notes).map(\.text) == ["tea offered"])
        await app.close()
    }

    /// Each refusal carries the class and the message of the CLI's.
    @Test(.timeLimit(.minutes(2))) func refusalsAreTypedWithTheCLIMessages() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let app = try await FieldSyncApp.open(device: try f.device("bp17", scopes: [AppFixtures.station, AppFixtures.otherStation]),
                                              configuration: AppFixtures.configuration)
        defer { Task { await app.close() } }
        let id = try await app.createIncident(AppFixtures.draft("Dispute")).record.id.description
        _ = try await app.setStatus(id, to: .onScene)

        func refusal(_ body: () async throws -> Void) async -> FieldSyncError? {
            do { try await body() } catch { return error as? FieldSyncError }
            return nil
        }
        let back = await refusal { _ = try await app.setStatus(id, to: .dispatched) }
        #expect(back?.code == .data && back?.field == "status")
        #expect(back?.message == "incident \(id) is already on-scene; status only moves forward "
                + "(reported → dispatched → on-scene → resolved → closed); to start over use `fieldsync incident reopen`")

        let reopen = await refusal { _ = try await app.reopen(id) }
        #expect(reopen?.message == "incident \(id) is open (on-scene); only a resolved or closed incident can be reopened")

        let outside = await refusal { _ = try await app.createIncident(AppFixtures.draft("x", scope: try Scope("longnan/cheng"))) }
        #expect(outside?.code == .permission)
        #expect(outside?.message.hasPrefix("this device (backpack, scopes longnan/wudu/station-017, longnan/wudu/station-018) "
                                          + "may not write in longnan/cheng") == true)

        let noKey = await refusal { _ = try await app.createIncident(AppFixtures.draft("x", scope: AppFixtures.otherStation)) }
        #expect(noKey?.code == .permission && noKey?.message.hasPrefix("no epoch key for longnan/wudu/station-018") == true)

        let missing = await refusal { _ = try await app.record("0123456789abcdef0123456789abcdef") }
        #expect(missing?.code == .notFound)
        #expect(missing?.message == "no record 0123456789abcdef0123456789abcdef in this device's store; `fieldsync list` shows "
                + "what it holds (a record made elsewhere arrives with `fieldsync sync`)")

        let malformed = await refusal { _ = try await app.record("12ab") }
        #expect(malformed?.code == .usage && malformed?.message.hasPrefix("\"12ab\" is not a record id") == true)

        let tooLong = Incident.MaxBytes.summary + 1
        let long = await refusal { _ = try await app.createIncident(AppFixtures.draft(String(repeating: "x", count: tooLong))) }
        #expect(long?.code == .invalidArgument && long?.message == "--summary is \(tooLong) bytes; at most \(Incident.MaxBytes.summary) allowed")

        let wrongKind = await refusal { _ = try await app.updateVisit(id, { var u = VisitUpdate(); u.outcome = "x"; return u }()) }
        #expect(wrongKind?.code == .usage && wrongKind?.message == "\(id) is an incident, not a visit; use `fieldsync incident ...`")

        let self_ = await refusal { _ = try await app.markDuplicate(id, of: id) }
        #expect(self_?.message == "an incident cannot duplicate itself" && self_?.field == "duplicateOf")

        let notAssigned = await refusal { _ = try await app.assign(id, units: [], remove: ["car-9"]) }
        #expect(notAssigned?.code == .data && notAssigned?.message == "car-9 is not assigned to \(id) (assigned: )")
    }

    /// `record(_:)` finds a record by a unique prefix and names an ambiguous one, through the id index.
    @Test(.timeLimit(.minutes(2))) func prefixLookupGoesThroughTheIdIndex() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let app = try await FieldSyncApp.open(device: try f.device("bp17"), configuration: AppFixtures.configuration)
        // Three records sharing the prefix abcdef01, one apart.
        let ids = ["abcdef0100000000000000000000000a", "abcdef0100000000000000000000000b", "abcdef0200000000000000000000000c",
                   "1bcdef0100000000000000000000000d"]
        for hex in ids {
            _ = try await app.perform { book in
                book.idSource = { RecordID(hex: hex)! }
                return try book.createIncident(AppFixtures.draft("record \(hex.suffix(1))"))
            }
        }
        #expect(try await app.record("abcdef02").id.description == ids[2])
        #expect(try await app.record("ABCDEF0200").id.description == ids[2], "hex digits in either case")
        do {
            _ = try await app.record("abcdef01")
            Issue.record("an ambiguous prefix must be refused")
        } catch {
            #expect(error.code == .usage)
            #expect(error.message == "abcdef01 matches 2 records (\(ids[0]), \(ids[1]), ...); give more digits")
        }
        await app.close()

        // The store answers the range from the index of records.id, without a scan of the records.
        let store = try SQLiteStore(path: "\(f.dir)/plan.sqlite", sealer: try StorageKeySealer(key: SecretBytes.random(count: 32)))
        let plan = try store.queryPlanRecordIDRange().joined(separator: "; ")
        #expect(plan.contains("SEARCH records USING COVERING INDEX"), "\(plan)")
        #expect(!plan.contains("SCAN"), "\(plan)")
        #expect(RecordID.prefixRange("abc") == RecordID(hex: "abc00000000000000000000000000000")!...RecordID(hex: "abcfffffffffffffffffffffffffffff")!)
        #expect(RecordID.prefixRange("xyz") == nil && RecordID.prefixRange("") == nil)
    }

    /// Queries take the `list` filters; the history is the signed trail `show` prints.
    @Test(.timeLimit(.minutes(2))) func queriesAndSignedHistory() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let app = try await FieldSyncApp.open(device: try f.device("bp17"), configuration: AppFixtures.configuration)
        let a = try await app.createIncident(AppFixtures.draft("Open one"))
        let b = try await app.createIncident(AppFixtures.draft("Done one"))
        _ = try await app.close(b.record.id.description)
        _ = try await app.createVisit(VisitDraft(scope: AppFixtures.village, subject: "household 7", visitor: "Li", visitType: .routine))

        let open = try await app.records(RecordQuery(kind: .incident, statusLevels: try RecordText.statusLevels("open")))
        #expect(open.map(\.id) == [a.record.id])
        let done = try await app.records(RecordQuery(kind: .incident, statusLevels: try RecordText.statusLevels("done")))
        #expect(done.map(\.id) == [b.record.id])
        #expect(try await app.records(RecordQuery(kind: .visit)).count == 1)
        #expect(try await app.records(RecordQuery(text: "Done")).map(\.id) == [b.record.id])
        #expect(try await app.records(RecordQuery()).count == 3)

        let history = try await app.history(of: b.record.id)
        #expect(history.count == 2)
        #expect(history.allSatisfy { $0.verification == .accepted })
        #expect(history.allSatisfy { $0.author?.role == .backpack && $0.log.author == app.identity.id })
        #expect(history.map(\.seq) == [2, 3])
        #expect(history.last?.actions?.count == 1)
        #expect(try await app.pendingToHQ() == 4, "four own changes, none receipted")
        await app.close()
    }
}
