import Foundation
import RESP
public import Redis

/// A real Redis Cluster for tests, on loopback: `masters` redis-server processes with
/// `cluster-enabled yes`, each with `replicasPerMaster` replicas, joined by
/// `redis-cli --cluster create … --cluster-replicas N --cluster-yes`; stopped when the test is done.
public final class RedisClusterProcess: Sendable {
    /// Every node, masters and replicas, in the order given to `redis-cli --cluster create`.
    public let nodes: [RedisServerProcess]
    /// The nodes' password (`requirepass`), when they have one.
    public let password: String?
    /// The certificates of the nodes' TLS ports, when they have them.
    public let certificates: TestCertificates?
    /// Each node's TLS port (in ``nodes``' order), when they have them.
    public let tlsPorts: [Int]
    /// An ACL user every node has, when the cluster was started with one.
    public let user: RedisACLUser?

    private init(nodes: [RedisServerProcess], password: String?, certificates: TestCertificates?, tlsPorts: [Int], user: RedisACLUser?) {
        self.nodes = nodes
        self.password = password
        self.certificates = certificates
        self.tlsPorts = tlsPorts
        self.user = user
    }

    /// `redis+cluster://[:<password>@]127.0.0.1:<port>,…` naming every node as a seed; with
    /// TLS, `rediss+cluster://` on the TLS ports with the test CA; with an ACL user, as that user.
    public var url: String {
        let credentials = user.map { "\($0.name):\($0.password)@" } ?? password.map { ":\($0)@" } ?? ""
        guard let certificates else { return "redis+cluster://" + credentials + nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") }
        return "rediss+cluster://" + credentials + tlsPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",")
            + "/?tls_ca_file=\(certificates.caFile)&tls_server_name=localhost"
    }

    /// Starts the nodes, creates the cluster, and waits until every node reports
    /// `cluster_state:ok` and knows every other node.
    ///
    /// - Parameters:
    ///   - certificates: each node also gets a TLS port with these, and the cluster bus and the
    ///     replication go over TLS (the plaintext ports stay open for the fixture's own checks;
    ///     clients use ``url``).
    ///   - user: an ACL user every node has, beside the default one.
    public static func start(
        masters: Int = 3, replicasPerMaster: Int = 1, password: String? = nil, certificates: TestCertificates? = nil, user: RedisACLUser? = nil
    ) async throws -> RedisClusterProcess {
        var nodes: [RedisServerProcess] = []
        var tlsPorts: [Int] = []
        do {
            for _ in 0..<(masters * (1 + replicasPerMaster)) {
                var arguments = [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", String(try RedisServerProcess.freePort()),
                    "--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no", "--repl-diskless-sync-delay", "0",
                ]
                arguments += password.map { ["--requirepass", $0, "--masterauth", $0] } ?? []
                if let certificates {
                    let tlsPort = try RedisServerProcess.freePort()
                    tlsPorts.append(tlsPort)
                    // The bus and the replication over TLS too: only then do the nodes announce
                    // their TLS ports (`tls-port` in CLUSTER SHARDS).
                    arguments += certificates.serverArguments(tlsPort: tlsPort) + ["--tls-cluster", "yes", "--tls-replication", "yes"]
                }
                arguments += user?.serverArguments ?? []
                nodes.append(try await RedisServerProcess.start(arguments))
            }
            let cluster = RedisClusterProcess(nodes: nodes, password: password, certificates: certificates, tlsPorts: tlsPorts, user: user)
            try await cluster.create(replicasPerMaster: replicasPerMaster)
            return cluster
        } catch {
            for node in nodes { node.stop() }
            throw error
        }
    }

    /// Runs `body` with a fresh cluster and stops it afterwards.
    public static func with<T>(
        masters: Int = 3, replicasPerMaster: Int = 1, password: String? = nil, certificates: TestCertificates? = nil, user: RedisACLUser? = nil,
        _ body: (RedisClusterProcess) async throws -> T
    ) async throws -> T {
        try await TopologyTurn.withDeployment(
            start: { try await start(masters: masters, replicasPerMaster: replicasPerMaster, password: password, certificates: certificates, user: user) },
            stop: { $0.stop() }, body)
    }

    private func create(replicasPerMaster: Int) async throws {
        let addresses = certificates == nil ? nodes.map { "127.0.0.1:\($0.port)" } : tlsPorts.map { "127.0.0.1:\($0)" }
        let created = try Self.redisCLI(
            (password.map { ["-a", $0, "--no-auth-warning"] } ?? []) + (certificates.map { ["--tls", "--cacert", $0.caFile] } ?? [])
                + ["--cluster", "create"] + addresses + ["--cluster-replicas", String(replicasPerMaster), "--cluster-yes"])
        guard created.status == 0 else { throw RedisFixtureError(message: "redis-cli --cluster create failed: \(created.output.suffix(2000))") }
        for _ in 0..<500 {
            if try await isReady() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RedisFixtureError(message: "the cluster did not reach cluster_state:ok within 10 s")
    }

    /// Whether every node says the cluster is ok and knows all the nodes, and every replica has
    /// synced with its master.
    public func isReady() async throws -> Bool {
        for node in nodes {
            let client = RedisClient(configuration: node.configuration())
            let info = try? await client.send(RESPCommand("CLUSTER", "INFO")).string
            // A replica is ready once it has synced with its master.
            let role = try? await client.send(RESPCommand("ROLE"))
            await client.shutdown()
            guard let info, info.contains("cluster_state:ok"), info.contains("cluster_known_nodes:\(nodes.count)") else { return false }
            if case .array(let parts) = role, parts.first?.string == "slave", parts.count >= 4, parts[3].string != "connected" { return false }
        }
        return true
    }

    /// Runs `redis-cli` with `arguments`; its exit status and output (stdout and stderr).
    public static func redisCLI(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try redisCLIPath())
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func redisCLIPath() throws -> String {
        for candidate in ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw RedisFixtureError(message: "redis-cli not found: run scripts/test, which installs redis-tools")
    }

    /// The slot map as the first node that answers sees it now (`CLUSTER SHARDS`): a test may
    /// have killed some.
    public func topology() async throws -> ClusterTopology {
        var lastError: (any Error)?
        for node in nodes {
            let client = RedisClient(configuration: node.configuration())
            do {
                let reply = try await client.send(RESPCommand("CLUSTER", "SHARDS"))
                await client.shutdown()
                return try ClusterTopology(shardsReply: reply, seed: .init(host: "127.0.0.1", port: node.port))
            } catch {
                await client.shutdown()
                lastError = error
            }
        }
        throw lastError ?? RedisFixtureError(message: "no node of the cluster answers")
    }

    /// A node's id (`CLUSTER MYID`), for `redis-cli --cluster reshard` and `CLUSTER SETSLOT`.
    public func id(of node: ClusterTopology.Node) async throws -> String {
        var configuration = RedisConfiguration(endpoint: .tcp(host: node.host, port: node.port))
        configuration.password = password
        let client = RedisClient(configuration: configuration)
        let id = try? await client.send(RESPCommand("CLUSTER", "MYID")).string
        await client.shutdown()
        guard let id else { throw RedisFixtureError(message: "\(node) did not say its id") }
        return id
    }

    /// Stops every node.
    public func stop() {
        for node in nodes { node.stop() }
    }
}

/// A user of Redis ACLs, beside the default one: `user <name> on ><password> <rules>`.
public struct RedisACLUser: Sendable {
    public var name: String
    public var password: String
    /// Key, channel and command rules, as in `~ibge:* &ibge:* +@all`.
    public var rules: [String]

    public init(name: String, password: String, rules: [String]) {
        self.name = name
        self.password = password
        self.rules = rules
    }

    /// The `redis-server` arguments that create the user.
    public var serverArguments: [String] { ["--user", name, "on", ">" + password] + rules }
}
