// The routes of the command center, the security middleware (headers, bounds, access log, error pages),
// and the live stream.

import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncReports
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension HTTPField.Name {
    static let contentSecurityPolicy = HTTPField.Name("Content-Security-Policy")!
    static let xContentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
    static let xFrameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
}

/// Security headers on every answer, bounds on every request, error pages, and one access log line per request.
struct SecurityMiddleware: RouterMiddleware {
    typealias Context = WebContext
    let center: CommandCenter

    /// No inline script or style, nothing from elsewhere, no framing, forms only to this origin.
    static let csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let op = center.security.session(request.cookie(CommandCenter.cookie))
        var response: Response
        do {
            guard request.uri.description.utf8.count <= Limits.uriBytes else {
                throw WebFailure(.badRequest, "The address is too long (at most \(Limits.uriBytes) bytes).")
            }
            response = try await next(request, context)
        } catch let f as WebFailure {
            response = center.html(Pages.error(f, op: op, role: center.role), status: f.status)
        } catch let e as FieldSyncError {
            let f = e.code == .notFound ? WebFailure.notFound() : WebFailure(.conflict, e.message)
            response = center.html(Pages.error(f, op: op, role: center.role), status: f.status)
        } catch let e as HTTPError {
            response = center.html(Pages.error(WebFailure(e.status, "The request was refused."), op: op, role: center.role), status: e.status)
        } catch {
            response = center.html(Pages.error(WebFailure(.internalServerError, "The node could not answer; see its log."), op: op, role: center.role),
                                   status: .internalServerError)
        }
        // A daily report page sets its own (stricter: no script at all; its one style element by hash).
        if response.headers[.contentSecurityPolicy] == nil { response.headers[.contentSecurityPolicy] = Self.csp }
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[.xFrameOptions] = "DENY"
        response.headers[.referrerPolicy] = "no-referrer"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        let path = request.uri.path
        if !path.hasPrefix("/static/") {
            let parts = path.split(separator: "/")
            let record = parts.count >= 2 && parts[0] == "incidents" ? String(parts[1].prefix(32)) : nil
            let action = request.method == .post ? (parts.count == 3 ? String(parts[2]) : String(parts.last ?? ""))
                : path == "/incidents.csv" ? "export" : path.hasPrefix("/reports/") ? "report" : nil
            center.accessLog.write(AccessLogEntry(at: center.options.clock(), operatorName: op?.name, source: context.source,
                                                  method: request.method.rawValue, path: String(path.prefix(200)),
                                                  record: record, action: action, status: Int(response.status.code)))
        }
        return response
    }
}

extension CommandCenter {
    static let cookie = "fs_session"
    static let loginCookie = "fs_login"

    func html(_ body: String, status: HTTPResponse.Status = .ok, headers extra: HTTPFields = [:]) -> Response {
        var h = extra
        h[.contentType] = "text/html; charset=utf-8"
        return Response(status: status, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    func redirect(_ to: String, headers extra: HTTPFields = [:]) -> Response {
        var h = extra
        h[.location] = to
        return Response(status: .seeOther, headers: h)
    }

    func cookie(_ name: String, _ value: String, maxAge: Int) -> String {
        "\(name)=\(value); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(maxAge)" + (options.secureCookies ? "; Secure" : "")
    }

    /// The logged-in operator, or a redirect to the login page (GET) / 401 (anything else).
    func requireOperator(_ request: Request) throws -> WebOperator {
        if let op = security.session(request.cookie(Self.cookie)) { return op }
        if request.method == .get, !request.uri.path.hasPrefix("/events") { throw Redirect(to: "/login") }
        throw WebFailure(.unauthorized, "Your session has ended; log in again.")
    }

    /// Checks a POST's CSRF token against the session's.
    func checkCSRF(_ form: FormPairs, _ op: WebOperator) throws(WebFailure) {
        guard let token = form["csrf"], WebToken.equal(token, op.csrf) else {
            throw WebFailure(.forbidden, "The form's security token is missing or wrong; reload the page and try again.")
        }
    }

    struct Redirect: Error { var to: String }

    /// Runs `body` with the `RecordBook` on the node's loop; a `WebFailure` it throws comes back as itself
    /// (the app would wrap it in a `FieldSyncError`).
    func onLoop<T: Sendable>(_ body: @escaping @Sendable (RecordBook) throws -> T) async throws -> T {
        let result: Result<T, WebFailure> = try await app.perform { book in
            do { return .success(try body(book)) } catch let f as WebFailure { return .failure(f) }
        }
        return try result.get()
    }

    func buildRouter() -> Router<WebContext> {
        let router = Router(context: WebContext.self)
        router.add(middleware: SecurityMiddleware(center: self))
        router.add(middleware: RedirectMiddleware(center: self))
        let offset = options.utcOffsetMinutes
        let root = options.rootScope

        router.get("/static/app.js") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "max-age=300"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: Assets.script)))
        }
        router.get("/static/style.css") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/css; charset=utf-8", .cacheControl: "max-age=300"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: Assets.style)))
        }

        router.get("/login") { request, _ in
            if self.security.session(request.cookie(Self.cookie)) != nil { return self.redirect("/") }
            let token = WebToken.random()
            return self.html(Pages.login(csrf: token, message: nil), headers: [.setCookie: self.cookie(Self.loginCookie, token, maxAge: 1800)])
        }
        router.post("/login") { request, context in
            let form = try await request.formPairs()
            guard let expected = request.cookie(Self.loginCookie), let sent = form["csrf"], WebToken.equal(expected, sent) else {
                throw WebFailure(.forbidden, "The login form's security token is missing or wrong; open the login page again.")
            }
            let name = form["name"] ?? "", password = form.pairs.first { $0.0 == "password" }?.1 ?? ""
            switch self.security.login(name: name, password: password, source: context.source) {
            case let .success(token):
                let seconds = Int(self.options.sessionLifetime / 1000)
                var h = HTTPFields()
                h.append(HTTPField(name: .setCookie, value: self.cookie(Self.cookie, token, maxAge: seconds)))
                h.append(HTTPField(name: .setCookie, value: self.cookie(Self.loginCookie, "", maxAge: 0)))
                return self.redirect("/", headers: h)
            case .failure(.wrongCredentials):
                let token = WebToken.random()
                return self.html(Pages.login(csrf: token, message: "Wrong operator name or password."), status: .unauthorized,
                                 headers: [.setCookie: self.cookie(Self.loginCookie, token, maxAge: 1800)])
            case let .failure(.rateLimited(after)):
                let token = WebToken.random()
                return self.html(Pages.login(csrf: token, message: "Too many failed logins; try again in \(after) s."), status: .tooManyRequests,
                                 headers: [.setCookie: self.cookie(Self.loginCookie, token, maxAge: 1800), .retryAfter: "\(after)"])
            }
        }
        router.post("/logout") { request, _ in
            let op = try self.requireOperator(request)
            try self.checkCSRF(try await request.formPairs(), op)
            self.security.logout(op.token)
            return self.redirect("/login", headers: [.setCookie: self.cookie(Self.cookie, "", maxAge: 0)])
        }

        router.get("/") { request, _ in
            let op = try self.requireOperator(request)
            _ = try request.queryPairs()
            let now = Int64(self.options.clock())
            let model = try await self.onLoop { try OverviewModel.read($0, op: op, now: now, offsetMinutes: offset) }
            return self.html(Pages.layout(title: "Overview", op: op, role: self.role, live: "/events",
                                          body: Pages.overview(model, now: now, offset: offset)))
        }
        router.get("/incidents") { request, _ in
            let op = try self.requireOperator(request)
            let f = try ListFilter(try request.queryPairs(), utcOffsetMinutes: offset)
            let rule = self.options.duplicateRule
            let page = try await self.onLoop { book in
                var page = try Reads.incidents(book, f, op: op, root: root, offset: (f.page - 1) * ListFilter.pageSize, limit: ListFilter.pageSize)
                try Suspects.flag(&page, book, op: op, rule: rule)
                return page
            }
            let live = f.page == 1 ? "/events" + HTML.query(f.pairs) : nil
            return self.html(Pages.layout(title: "Incidents", op: op, role: self.role, live: live, body: Pages.list(page, filter: f, offset: offset)))
        }
        router.get("/incidents.csv") { request, _ in
            let op = try self.requireOperator(request)
            let f = try ListFilter(try request.queryPairs(), utcOffsetMinutes: offset)
            let page = try await self.onLoop { try Reads.incidents($0, f, op: op, root: root, offset: 0, limit: ListFilter.scanCap) }
            var csv = "id,reportedAt,county,station,scope,category,priority,status,summary,reporter,assignedUnits,feedback,feedbackDeadline,duplicateOf\r\n"
            for r in page.rows {
                let cells = [r.id, TimeText.format(r.reportedAt, offsetMinutes: offset), r.county, r.station, r.scope, r.category, r.priority, r.status,
                             r.summary, r.reporter, r.units.joined(separator: " "), r.feedback ?? "",
                             r.feedbackDeadline.map { TimeText.format($0, offsetMinutes: offset) } ?? "", r.duplicateOf ?? ""]
                csv += cells.map(HTML.csvCell).joined(separator: ",") + "\r\n"
            }
            return Response(status: .ok, headers: [.contentType: "text/csv; charset=utf-8",
                                                   .contentDisposition: "attachment; filename=\"incidents.csv\""],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: csv)))
        }
        router.get("/incidents/:id") { request, context in
            let op = try self.requireOperator(request)
            let q = try request.queryPairs()
            let id = context.parameters.get("id") ?? ""
            let now = self.options.clock()
            let rule = self.options.duplicateRule
            let model = try await self.onLoop { try DetailReads.detail($0, id: id, op: op, now: now, rule: rule) }
            let flash = q["done"].flatMap { ["assign": "Unit assigned.", "route": "Routed.", "status": "Status set.", "note": "Note added.",
                                             "duplicate": "Marked as duplicate."][$0] }
            return self.html(Pages.layout(title: "Incident \(id.prefix(8))", op: op, role: self.role,
                                          body: Pages.detail(model, op: op, mayDispatch: self.mayDispatch, now: Int64(now), offset: offset, flash: flash)))
        }
        router.post("/incidents/:id/:action") { request, context in
            let op = try self.requireOperator(request)
            let form = try await request.formPairs()
            try self.checkCSRF(form, op)
            guard self.mayDispatch else {
                throw WebFailure(.forbidden, "This node's role (\(self.role)) may not dispatch; actions are for hq, county, command and station nodes.")
            }
            let id = context.parameters.get("id") ?? ""
            let action = try WebAction(context.parameters.get("action") ?? "", form: form)
            let written = try await self.onLoop { try DetailReads.perform($0, id: id, action: action, op: op) }
            return self.redirect("/incidents/\(HTML.urlComponent(written.record.id.description))?done=\(action.name)")
        }
        addReportRoutes(router)
        router.get("/events") { request, _ in
            let op = try self.requireOperator(request)
            let f = try ListFilter(try request.queryPairs(), utcOffsetMinutes: offset)
            return self.liveStream(op: op, filter: f)
        }
        return router
    }

    /// Server-Sent Events: one `incident` event per changed incident the operator may see and the filter
    /// matches (JSON; the page builds the row with textContent), a comment every second as a heartbeat; the
    /// stream ends (an `end` event) as soon as the session is no longer valid (expired, logged out, account
    /// removed) or the server stops.
    func liveStream(op: WebOperator, filter: ListFilter) -> Response {
        let root = options.rootScope
        let changes = app.recordChanges(matching: RecordQuery(kind: .incident), bufferingNewest: 256)
        let body = ResponseBody { [self] writer in
            self.streamOpened()
            defer { self.streamClosed() }
            let (merged, cont) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(512))
            let feeder = Task(executorPreference: self.options.executor) {
                let encoder = JSONEncoder()
                for await change in changes {
                    guard op.mayRead(change.record.scope), let row = IncidentRow(change.record), filter.matchesLive(row, root: root),
                          let json = try? encoder.encode(row) else { continue }
                    cont.yield("event: incident\ndata: \(String(decoding: json, as: UTF8.self))\n\n")
                }
                cont.finish()
            }
            let ticker = Task(executorPreference: self.options.executor) {
                while !Task.isCancelled {
                    await Self.heartbeatPause()
                    cont.yield(": heartbeat\n\n")
                }
            }
            defer {
                feeder.cancel()
                ticker.cancel()
            }
            try await writer.write(ByteBuffer(string: "retry: 2000\n: live\n\n"))
            for await message in merged {
                guard self.security.session(op.token) != nil else {
                    try await writer.write(ByteBuffer(string: "event: end\ndata: session ended\n\n"))
                    break
                }
                try await writer.write(ByteBuffer(string: message))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"], body: body)
    }
}

/// Turns `CommandCenter.Redirect` into a 303 to the login page.
struct RedirectMiddleware: RouterMiddleware {
    typealias Context = WebContext
    let center: CommandCenter
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let r as CommandCenter.Redirect {
            return center.redirect(r.to)
        }
    }
}

extension CommandCenter {
    private static let heartbeatTimers = DispatchQueue(label: "fieldsync.web.heartbeat")

    /// One second between a live stream's heartbeats (which also end an expired session's stream). A dispatch
    /// timer, not `Task.sleep`, whose wake-up goes through Swift's cooperative pool even for a task that prefers
    /// another executor: with that pool's threads held by blocking work, an expired session's stream was not
    /// ended within 5 s. A cancelled stream notices at the next beat.
    static func heartbeatPause() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            heartbeatTimers.asyncAfter(deadline: .now() + .seconds(1)) { c.resume() }
        }
    }
}
