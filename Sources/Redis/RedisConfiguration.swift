import Utilities

/// Where and how to reach a Redis server.
public struct RedisConfiguration: Sendable, Hashable {
    /// A TCP address or a unix-domain socket.
    public enum Endpoint: Sendable, Hashable {
        /// Host name or IP address and port.
        case tcp(host: String, port: Int)
        /// Path of a unix-domain socket.
        case unixSocket(path: String)
    }

    /// Where the server listens (for a cluster, the first seed).
    public var endpoint: Endpoint
    /// A Redis Cluster's seed nodes (`redis+cluster://…`): the client reads the slot map from
    /// them and sends each command to the master serving its key. Nil: one server, ``endpoint``.
    public var clusterSeeds: [Endpoint]?
    /// Redis Sentinel (`redis+sentinel://…`): the sentinels to ask, and the name of the master
    /// they watch. The client connects to the master they name, follows their
    /// `+switch-master`, and asks again when the master stops answering. Nil: no sentinels.
    public var sentinel: Sentinel?
    /// On a cluster (URL parameter `read_from=replicas`): commands without effects on one slot
    /// (`GET`, single-slot `MGET`, `EXISTS`…) go to a replica of the slot's shard (in turn,
    /// after `READONLY`), falling back to its master when it has none or one does not answer.
    /// Spreads reads over more nodes, at the price of replication lag: a value just written
    /// through the master may not be read back from a replica at once. Writes, scripts and
    /// locks always go to the master.
    public var readFromReplicas = false
    /// This connection is to a cluster replica that is to serve reads: the handshake ends with
    /// `READONLY`.
    var sendsReadOnly = false

    /// Where the sentinels are and which master to follow.
    public struct Sentinel: Sendable, Hashable {
        /// The sentinels.
        public var endpoints: [Endpoint]
        /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
        public var masterName: String
        /// The sentinels' password (URL parameter `sentinel_password`), when they need one.
        public var password: String?

        /// Creates a sentinel setting.
        public init(endpoints: [Endpoint], masterName: String, password: String? = nil) {
            self.endpoints = endpoints
            self.masterName = masterName
            self.password = password
        }
    }
    /// Whether to use TLS (`rediss://`). The server's certificate is always verified; there is
    /// no fallback to plaintext.
    public var tls: Bool
    /// PEM file of the certificate authorities to trust for TLS (default: the system's).
    /// URL parameter `tls_ca_file`.
    public var tlsCAFile: String?
    /// The name the server's certificate must carry and the SNI sent (default: the host).
    /// URL parameter `tls_server_name`.
    public var tlsServerName: String?
    /// ACL user name (Redis 6+), or nil for the default user.
    public var username: String?
    /// Password, or nil when the server needs none.
    public var password: String?
    /// Logical database selected after connecting.
    public var database: Int
    /// How long establishing a connection, handshake included, may take.
    public var connectTimeout: Duration
    /// How long a command may wait for its reply before it fails and its connection is closed.
    public var commandTimeout: Duration
    /// How many connections the client keeps open at most. Commands are pipelined on them.
    public var maximumConnections: Int
    /// How many connections ``RedisClient/run()`` keeps open even when idle.
    public var minimumConnections: Int
    /// How long a caller may wait for a connection being opened before it fails with
    /// ``RedisError/Code/poolTimeout`` (the attempt goes on). A cache wants tens of
    /// milliseconds here, so that no request waits on a slow connect.
    public var poolWaitTimeout: Duration
    /// Most commands in flight on one connection; beyond that the pool uses another connection,
    /// or fails the call with ``RedisError/Code/poolTimeout`` rather than queue without bound.
    public var maximumPendingPerConnection: Int
    /// An idle connection is pinged this often by ``RedisClient/run()``, so a dead one is found
    /// before a caller needs it.
    public var keepAliveInterval: Duration
    /// Connections above ``minimumConnections`` idle for this long are closed by ``RedisClient/run()``.
    public var idleTimeout: Duration
    /// The wait before trying again to open a connection after the first failure; it doubles at
    /// each failure, up to ``maximumReconnectBackoff``, with ±25 % jitter.
    public var reconnectBackoff: Duration
    /// The longest wait between attempts to open a connection.
    public var maximumReconnectBackoff: Duration
    /// The name the connections give themselves (`CLIENT SETNAME`), visible in `CLIENT LIST`.
    public var clientName: String?
    /// Limits on the replies the server may send: the longest bulk string.
    public var maximumReplyBytes: Int
    /// Most bytes of replies a connection holds while a reply is incomplete (a whole `MGET` of
    /// many values included); past it the connection is closed with a protocol error, so a
    /// broken or hostile server cannot make the client buffer without bound.
    public var maximumBufferedBytes: Int

    /// Creates a configuration.
    public init(
        endpoint: Endpoint,
        tls: Bool = false,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(2),
        maximumConnections: Int = 4,
        minimumConnections: Int = 1,
        poolWaitTimeout: Duration = .seconds(2),
        maximumPendingPerConnection: Int = 4096,
        keepAliveInterval: Duration = .seconds(30),
        idleTimeout: Duration = .seconds(300),
        reconnectBackoff: Duration = .milliseconds(50),
        maximumReconnectBackoff: Duration = .seconds(2),
        clientName: String? = nil,
        maximumReplyBytes: Int = 512 * 1024 * 1024,
        maximumBufferedBytes: Int? = nil
    ) {
        self.maximumBufferedBytes = maximumBufferedBytes ?? (maximumReplyBytes + 1024 * 1024)
        self.endpoint = endpoint
        self.clusterSeeds = nil
        self.sentinel = nil
        self.tls = tls
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.maximumConnections = maximumConnections
        self.minimumConnections = minimumConnections
        self.poolWaitTimeout = poolWaitTimeout
        self.maximumPendingPerConnection = maximumPendingPerConnection
        self.keepAliveInterval = keepAliveInterval
        self.idleTimeout = idleTimeout
        self.reconnectBackoff = reconnectBackoff
        self.maximumReconnectBackoff = maximumReconnectBackoff
        self.clientName = clientName
        self.maximumReplyBytes = maximumReplyBytes
    }

    /// Parses `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS),
    /// `redis+cluster://[user:password@]host:port,host:port,...` (a Redis Cluster, given by seed
    /// nodes; `rediss+cluster://` with TLS), `redis+sentinel://[user:password@]host:port,host:port/<master>[/db]`
    /// (the master that Redis Sentinel names; `?sentinel_password=` for the sentinels' own) or
    /// `unix:///path/to/redis.sock[?db=N]`.
    ///
    /// - Throws: ``RedisError`` with code ``RedisError/Code/invalidConfiguration`` naming what is wrong.
    public init(url: String) throws(RedisError) {
        func invalid(_ why: String) -> RedisError {
            RedisError(.invalidConfiguration, "invalid Redis URL '\(Self.redacted(url))': \(why)")
        }
        guard let schemeEnd = url.schemeSeparator else { throw invalid("expected redis://, rediss:// or unix://") }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        var rest = Substring(url[schemeEnd.upperBound...])

        var query: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for item in rest[rest.index(after: q)...].split(separator: "&") {
                let parts = item.split(separator: "=", maxSplits: 1)
                query[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
            }
            rest = rest[..<q]
        }

        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = String(userInfo[..<colon])
                username = user.isEmpty ? nil : try Self.credential(user, invalid)
                password = try Self.credential(userInfo[userInfo.index(after: colon)...], invalid)
            } else if !userInfo.isEmpty {
                // `redis://secret@host` is the password form used by many clients.
                password = try Self.credential(userInfo, invalid)
            }
        }

        var database = 0
        if let db = query["db"] {
            guard let n = Int(db), n >= 0 else { throw invalid("database '\(db)' is not a number >= 0") }
            database = n
        }

        /// `host`, `host:port`, `[v6]` or `[v6]:port`.
        func tcpEndpoint(_ hostPort: Substring) throws(RedisError) -> Endpoint {
            var host: Substring
            var portText: Substring?
            if hostPort.hasPrefix("[") {
                guard let close = hostPort.firstIndex(of: "]") else { throw invalid("unterminated IPv6 address") }
                host = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
                let after = hostPort[hostPort.index(after: close)...]
                if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { throw invalid("unexpected '\(after)'") }
            } else if let colon = hostPort.lastIndex(of: ":") {
                host = hostPort[..<colon]
                portText = hostPort[hostPort.index(after: colon)...]
            } else {
                host = hostPort
            }
            guard !host.isEmpty else { throw invalid("missing host") }
            var port = 6379
            if let portText {
                guard let p = Int(portText), (1...65535).contains(p) else { throw invalid("port '\(portText)' is not in 1...65535") }
                port = p
            }
            return .tcp(host: String(host), port: port)
        }

        let endpoint: Endpoint
        var tls = false
        var seeds: [Endpoint]?
        var sentinel: Sentinel?
        switch scheme {
        case "redis+sentinel", "rediss+sentinel":
            tls = scheme.hasPrefix("rediss")
            // host:port,host:port/<master name>[/db]
            let parts = rest.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count >= 2, !parts[1].isEmpty else { throw invalid("expected redis+sentinel://host:port,.../<master name>[/db]") }
            let nodes = parts[0].split(separator: ",", omittingEmptySubsequences: false)
            guard nodes.count <= 64 else { throw invalid("more than 64 sentinels") }
            var parsed: [Endpoint] = []
            for node in nodes {
                // A sentinel's port is 26379 unless given.
                let hasPort = node.hasPrefix("[") ? node.contains("]:") : node.contains(":")
                let endpoint = try tcpEndpoint(node)
                if !hasPort, case .tcp(let host, _) = endpoint { parsed.append(.tcp(host: host, port: 26379)) } else { parsed.append(endpoint) }
            }
            let name = String(parts[1])
            guard name.utf8.count <= 256, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw invalid("invalid master name") }
            if parts.count == 3, !parts[2].isEmpty {
                guard let n = Int(parts[2]), n >= 0 else { throw invalid("database '\(parts[2])' is not a number >= 0") }
                database = n
            }
            var sentinelPassword: String?
            if let text = query["sentinel_password"] { sentinelPassword = try Self.credential(text, invalid) }
            sentinel = Sentinel(endpoints: parsed, masterName: name, password: sentinelPassword)
            endpoint = parsed[0]
        case "redis", "rediss", "redis+cluster", "rediss+cluster":
            tls = scheme.hasPrefix("rediss")
            var hostPort = rest
            if let slash = rest.firstIndex(of: "/") {
                hostPort = rest[..<slash]
                let dbText = rest[rest.index(after: slash)...]
                if !dbText.isEmpty {
                    guard let n = Int(dbText), n >= 0 else { throw invalid("database '\(dbText)' is not a number >= 0") }
                    database = n
                }
            }
            if scheme.hasSuffix("+cluster") {
                let nodes = hostPort.split(separator: ",", omittingEmptySubsequences: false)
                guard nodes.count <= 64 else { throw invalid("more than 64 seed nodes") }
                var parsed: [Endpoint] = []
                for node in nodes { parsed.append(try tcpEndpoint(node)) }
                guard database == 0 else { throw invalid("a cluster has only database 0") }
                seeds = parsed
                endpoint = parsed[0]
            } else {
                endpoint = try tcpEndpoint(hostPort)
            }
        case "unix":
            guard rest.hasPrefix("/") else { throw invalid("expected an absolute socket path, as in unix:///run/redis.sock") }
            endpoint = .unixSocket(path: String(rest))
        default:
            throw invalid("unknown scheme '\(scheme)'; expected redis, rediss, redis+cluster, redis+sentinel (or their rediss+ forms) or unix")
        }
        self.init(endpoint: endpoint, tls: tls, username: username, password: password, database: database)
        self.clusterSeeds = seeds
        self.sentinel = sentinel
        if let ca = query["tls_ca_file"] { self.tlsCAFile = PercentDecoding.lenient(ca) }
        if let name = query["tls_server_name"] { self.tlsServerName = name }
        switch query["read_from"] {
        case nil, "master": break
        case "replicas":
            guard seeds != nil else { throw invalid("read_from=replicas needs a cluster (redis+cluster://)") }
            self.readFromReplicas = true
        case let other?:
            throw invalid("read_from must be master or replicas, not '\(other.prefix(40))'")
        }
        if (tlsCAFile != nil || tlsServerName != nil) && !tls {
            throw invalid("tls_ca_file and tls_server_name need rediss://")
        }
    }

    /// The URL with its passwords replaced by `***` (the one before `@`, and query parameters
    /// such as `sentinel_password`), for logs, errors and status.
    public static func redacted(_ url: String) -> String {
        var text = Substring(url)
        var query = ""
        if let mark = url.firstIndex(of: "?") {
            text = url[..<mark]
            query =
                "?"
                + url[url.index(after: mark)...].split(separator: "&", omittingEmptySubsequences: false).map { item -> String in
                    let parts = item.split(separator: "=", maxSplits: 1)
                    guard parts.count == 2, parts[0].lowercased().contains("password") else { return String(item) }
                    return parts[0] + "=***"
                }.joined(separator: "&")
        }
        let base = String(text)
        guard let schemeEnd = base.schemeSeparator, let at = base[schemeEnd.upperBound...].lastIndex(of: "@") else { return base + query }
        let userInfo = base[schemeEnd.upperBound..<at]
        if let colon = userInfo.firstIndex(of: ":") {
            return String(base[..<colon]) + ":***" + String(base[at...]) + query
        }
        return String(base[..<schemeEnd.upperBound]) + "***" + String(base[at...]) + query
    }

    private static func credential(_ text: some StringProtocol, _ invalid: (String) -> RedisError) throws(RedisError) -> String {
        guard let decoded = PercentDecoding.strict(text) else { throw invalid("bad percent-encoding in credentials") }
        return decoded
    }
}

extension RedisConfiguration.Endpoint: CustomStringConvertible {
    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unixSocket(let path): "unix:\(path)"
        }
    }
}

extension String {
    /// The range of the first `://`.
    var schemeSeparator: Range<String.Index>? {
        var index = startIndex
        while index < endIndex {
            if self[index...].hasPrefix("://") { return index..<self.index(index, offsetBy: 3) }
            index = self.index(after: index)
        }
        return nil
    }
}
