import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The admin rule: calls that change state (POST, DELETE) under `/api/ibge/cache` need
/// `Authorization: Bearer <CACHE_ADMIN_TOKEN>` when a token is configured (else 401), and come
/// from a loopback address when none is (else 403). Reads (GET) are open.
///
/// A browser's request from another site is refused (403) before either: a page open on the
/// same machine must not clear or preload the cache with a form or a `fetch`. Browsers say where
/// a request comes from (`Sec-Fetch-Site`, `Origin`); clients that are not browsers send neither.
/// Without a token, a loopback request must also name a loopback host (against DNS rebinding)
/// and not come through a proxy (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`), where everyone is loopback,
/// and carry no body a form could send (`application/x-www-form-urlencoded`, `multipart/form-data`,
/// `text/plain`).
///
/// With `TRUSTED_PROXIES`, a request from one of those addresses is judged by the client it
/// forwards, not refused for coming through a proxy: the rightmost `X-Forwarded-For` entry that is
/// not itself a trusted proxy, and `X-Real-IP`; every one present must be loopback, and a request
/// that forwards neither (or only `Forwarded`, which is not read) is refused.
struct AdminAuthMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let token: String?
    var trustedProxies: Set<String> = []

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method != .get, request.method != .head else { return try await next(request, context) }
        if let origin = Self.crossSiteOrigin(request.headers, authority: request.head.authority) {
            return .error("admin calls are refused from another site's page (Origin: \(origin.prefix(100)))", status: .forbidden)
        }
        if let token {
            let given = request.headers[.authorization].flatMap { value -> Substring? in
                guard value.count > 7, value.prefix(7).lowercased() == "bearer " else { return nil }
                return value.dropFirst(7)
            }
            guard let given, Self.constantTimeEquals(Array(given.utf8), Array(token.utf8)) else {
                return .error(
                    "admin calls need 'Authorization: Bearer <CACHE_ADMIN_TOKEN>'", status: .unauthorized,
                    headers: [.wwwAuthenticate: "Bearer"])
            }
            return try await next(request, context)
        }
        if let peer = context.remoteAddress?.ipAddress, trustedProxies.contains(Self.normalized(peer)) {
            // A proxy we trust: judge the client it forwards. Everything it says must agree (a
            // client's own X-Forwarded-For passed through beside the proxy's X-Real-IP does not),
            // and saying nothing is not being local.
            let clients = Self.forwardedClients(request.headers, trusted: trustedProxies)
            guard Self.forwardedField.map({ request.headers[$0] == nil }) ?? true, !clients.isEmpty, clients.allSatisfy(Self.isLoopback(ip:)) else {
                return .error(
                    "admin calls through a proxy are allowed for a loopback client only while CACHE_ADMIN_TOKEN is unset", status: .forbidden)
            }
        } else {
            guard Self.isLoopback(context.remoteAddress) else {
                return .error("admin calls are allowed from loopback only while CACHE_ADMIN_TOKEN is unset", status: .forbidden)
            }
            // Loopback is not enough when the connection only looks local: a reverse proxy on this
            // host forwards everyone's requests, and a page whose name was re-pointed at 127.0.0.1
            // (DNS rebinding) is same-origin to the browser but names its own host.
            if Self.proxyFields.contains(where: { request.headers[$0] != nil }) {
                return .error("admin calls through a proxy need CACHE_ADMIN_TOKEN (or the proxy in TRUSTED_PROXIES)", status: .forbidden)
            }
        }
        guard Self.isLoopbackHost(request.head.authority) else {
            return .error("admin calls without CACHE_ADMIN_TOKEN must name a loopback host (localhost, 127.0.0.1, [::1])", status: .forbidden)
        }
        // What an HTML form can send without asking (even from a browser that leaves out
        // Origin): refused; JSON or no body at all is what clients send.
        if let type = request.headers[.contentType], Self.isFormContentType(type) {
            return .error("admin calls without CACHE_ADMIN_TOKEN take a JSON body or none, not \(type.prefix(60))", status: .forbidden)
        }
        return try await next(request, context)
    }

    /// The content types a form (a CORS "simple request") may send.
    static func isFormContentType(_ value: String) -> Bool {
        let mediaType = value.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        return mediaType == "application/x-www-form-urlencoded" || mediaType == "multipart/form-data" || mediaType == "text/plain"
    }

    /// Fields a reverse proxy adds.
    static let proxyFields = ["Forwarded", "X-Forwarded-For", "X-Real-IP"].compactMap { HTTPField.Name($0) }

    /// Whether a `Host` (authority) names this machine: `localhost`, `127.x.x.x` or `[::1]`,
    /// with or without a port. A request without one (HTTP/1.0) is taken as local.
    static func isLoopbackHost(_ authority: String?) -> Bool {
        guard let authority, !authority.isEmpty else { return true }
        var host = Substring(authority.lowercased())
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            return host[host.index(after: host.startIndex)..<close] == "::1"
        }
        if let colon = host.lastIndex(of: ":") { host = host[..<colon] }
        if host == "localhost" { return true }
        // 127.x.x.x written as an address: four numbers 0–255, the first 127 (a name such as
        // 127.attacker.example is a name, which can be re-pointed).
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127"
            && parts.allSatisfy { $0.count <= 3 && !$0.isEmpty && $0.allSatisfy { $0 >= "0" && $0 <= "9" } && (Int($0) ?? 256) <= 255 }
    }

    /// The origin a browser says a request comes from, when it is not this server's own; nil for
    /// a same-origin request and for clients that are not browsers.
    static func crossSiteOrigin(_ fields: HTTPFields, authority: String?) -> String? {
        if let name = HTTPField.Name("Sec-Fetch-Site"), let site = fields[name]?.lowercased(), site != "same-origin", site != "none" {
            return fields[.origin] ?? "(\(site))"
        }
        guard let origin = fields[.origin] else { return nil }
        // Same origin: scheme://host[:port] naming the Host the request was sent to (a default
        // port may be left out on either side).
        guard let separator = origin.range(of: "://"), let host = authority, !host.isEmpty else { return origin }
        let scheme = origin[..<separator.lowerBound].lowercased()
        func withoutDefaultPort(_ text: Substring) -> Substring {
            let defaultPort = scheme == "https" ? ":443" : ":80"
            return text.hasSuffix(defaultPort) ? text.dropLast(defaultPort.count) : text
        }
        let originHost = withoutDefaultPort(Substring(origin[separator.upperBound...].lowercased()))
        return originHost == withoutDefaultPort(Substring(host.lowercased())) ? nil : origin
    }

    /// `Forwarded` (RFC 7239), which is not read: its presence is not trusted.
    static let forwardedField = HTTPField.Name("Forwarded")

    /// The client addresses a trusted proxy forwards: the rightmost `X-Forwarded-For` entry that
    /// is not itself a trusted proxy (entries to its left are the client's to write; all of them
    /// trusted: the first), and `X-Real-IP`; those present.
    static func forwardedClients(_ fields: HTTPFields, trusted: Set<String>) -> [String] {
        var clients: [String] = []
        if let name = HTTPField.Name("X-Forwarded-For") {
            let entries = fields[values: name].flatMap { $0.split(separator: ",") }.map { normalized($0.trimmingCharacters(in: .whitespaces)) }
            if let client = entries.reversed().first(where: { !trusted.contains($0) }) ?? entries.first { clients.append(client) }
        }
        if let name = HTTPField.Name("X-Real-IP") {
            clients += fields[values: name].map { normalized($0.trimmingCharacters(in: .whitespaces)) }
        }
        return clients
    }

    /// An address in one spelling, to compare with `TRUSTED_PROXIES`: without brackets, a port or
    /// an IPv4-mapped prefix, in the canonical text of the address (`2001:0db8::1` → `2001:db8::1`).
    /// Text that is not an address is returned lowercased (it matches nothing, and is not loopback).
    static func normalized(_ address: String) -> String {
        var text = address.lowercased()
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            text = String(text[text.index(after: text.startIndex)..<close])
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            text = String(text[..<colon])  // IPv4 with a port
        }
        if let canonical = try? SocketAddress(ipAddress: text, port: 0).ipAddress { text = canonical }
        // IPv4-mapped IPv6 (`::ffff:127.0.0.1`, also written `::ffff:7f00:1`) is the IPv4 address.
        if text.hasPrefix("::ffff:"), text.contains(".") { text = String(text.dropFirst(7)) }
        return text
    }

    /// Whether an address written as text is loopback (127.x.x.x, ::1).
    static func isLoopback(ip: String) -> Bool {
        let text = normalized(ip)
        if text == "::1" { return true }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isNumber) }
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        guard let address else { return false }
        switch address {
        case .v4:
            return address.ipAddress?.hasPrefix("127.") ?? false
        case .v6:
            guard let ip = address.ipAddress else { return false }
            return ip == "::1" || ip.hasPrefix("::ffff:127.")
        case .unixDomainSocket:
            return true
        }
    }

    /// Compares without stopping at the first difference, so timing does not reveal the token.
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0
    }
}

/// `ALLOWED_HOSTS`: the operators' pages and answers (the admin API, reads included, `/metrics`,
/// the dashboard) answer only requests naming one of those hosts or a loopback one; others get
/// 421. A page whose name was re-pointed at this server (DNS rebinding) is same-origin to the
/// browser, but names its own host: it cannot read the status either.
struct AllowedHostsMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let allowedHosts: [String]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard Self.isAllowedHost(request.head.authority, allowedHosts) else {
            return .error(
                "this server does not answer operators' calls for host '\((request.head.authority ?? "").prefix(100))' (ALLOWED_HOSTS)",
                status: .misdirectedRequest)
        }
        return try await next(request, context)
    }

    /// Whether `authority` names a host of `allowed` (a leading dot allows the subdomains too:
    /// `.example.com`) or a loopback host; the port is not compared.
    static func isAllowedHost(_ authority: String?, _ allowed: [String]) -> Bool {
        // No Host at all (HTTP/1.0): names nothing, so nothing to allow.
        guard let authority, !authority.isEmpty else { return false }
        if AdminAuthMiddleware.isLoopbackHost(authority) { return true }
        var host = Substring(authority.lowercased())
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            host = host[...close]
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        // `example.com.` is `example.com`, fully qualified.
        if host.hasSuffix(".") { host = host.dropLast() }
        return allowed.contains { name in
            name.hasPrefix(".") ? (host.hasSuffix(name) || host == name.dropFirst()) : host == name
        }
    }

}
