public import RESP

/// Which node serves each hash slot of a Redis Cluster, as `CLUSTER SHARDS` (Redis 7) or
/// `CLUSTER SLOTS` (older servers) describe it.
///
/// A reply is checked as it is read: slot ranges inside 0 ..< 16384, ports 1 ... 65535, hosts
/// non-empty and short, at most 16384 ranges. A reply that breaks any of these is refused as a
/// whole (``RedisError/Code/protocolError``), so a broken or hostile node cannot point the
/// client at nonsense or make it allocate without bound.
public struct ClusterTopology: Sendable, Equatable {
    /// A node's address.
    public struct Node: Sendable, Hashable, CustomStringConvertible {
        /// Host name or IP address the node announces.
        public var host: String
        /// Its port.
        public var port: Int

        /// Creates a node address.
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// A contiguous range of slots and who serves it.
    public struct Shard: Sendable, Equatable {
        /// The first and the last slot of the range.
        public var slots: ClosedRange<Int>
        /// The master.
        public var master: Node
        /// Its replicas that are online.
        public var replicas: [Node]
    }

    /// The ranges, sorted by their first slot.
    public private(set) var shards: [Shard]
    /// The master of each slot, as an index into ``shards`` (nil: not served).
    private var owner: [Int32]
    /// Slots a `MOVED` gave to another node since the map was read (at most one entry a slot).
    private var moved: [UInt16: Node] = [:]

    /// A topology from its ranges (sorted here; overlaps are refused).
    public init(shards: [Shard]) throws(RedisError) {
        guard shards.count <= HashSlot.count else { throw Self.invalid("more than 16384 slot ranges") }
        self.shards = shards.sorted { $0.slots.lowerBound < $1.slots.lowerBound }
        self.owner = Array(repeating: -1, count: HashSlot.count)
        for (index, shard) in self.shards.enumerated() {
            guard shard.slots.lowerBound >= 0, shard.slots.upperBound < HashSlot.count else { throw Self.invalid("slot range \(shard.slots)") }
            for slot in shard.slots {
                guard owner[slot] == -1 else { throw Self.invalid("slot \(slot) is in two ranges") }
                owner[slot] = Int32(index)
            }
        }
    }

    /// The master serving `slot`, or nil when no node does.
    public func master(of slot: HashSlot) -> Node? {
        if let node = moved[slot.rawValue] { return node }
        let index = Int(owner[Int(slot.rawValue)])
        return index >= 0 ? shards[index].master : nil
    }

    /// The shard serving `slot` (a slot moved since the map was read: its new master alone).
    public func shard(of slot: HashSlot) -> Shard? {
        if let node = moved[slot.rawValue] { return Shard(slots: Int(slot.rawValue)...Int(slot.rawValue), master: node, replicas: []) }
        let index = Int(owner[Int(slot.rawValue)])
        return index >= 0 ? shards[index] : nil
    }

    /// Every master, once.
    public var masters: [Node] {
        var seen = Set<Node>()
        return (shards.map(\.master) + moved.values.sorted { $0.description < $1.description }).filter { seen.insert($0).inserted }
    }

    /// Whether the map names `node`, as a master or a replica.
    public func knows(_ node: Node) -> Bool {
        moved.values.contains(node) || shards.contains { $0.master == node || $0.replicas.contains(node) }
    }

    /// Whether every slot is served.
    public var coversAllSlots: Bool { !owner.contains(-1) }

    /// Moves `slot` to `node` (after a `MOVED`), until the map is read again.
    public mutating func assign(_ slot: HashSlot, to node: Node) {
        let index = Int(slot.rawValue)
        if owner[index] >= 0, shards[Int(owner[index])].master == node {
            moved[slot.rawValue] = nil
        } else {
            moved[slot.rawValue] = node
        }
    }

    /// Same masters and replicas for every slot.
    public static func == (lhs: ClusterTopology, rhs: ClusterTopology) -> Bool {
        (0..<HashSlot.count).allSatisfy { raw in
            guard let slot = HashSlot(rawValue: raw) else { return true }
            let (a, b) = (lhs.shard(of: slot), rhs.shard(of: slot))
            return a?.master == b?.master && a?.replicas == b?.replicas
        }
    }

    // MARK: - Parsing

    /// The topology in a `CLUSTER SHARDS` reply (RESP3 maps, or RESP2 flat key/value arrays).
    /// `seed` is the node that answered: a node announcing no address (`?` or empty) is it.
    /// A shard's master is its node with role `master` and health `online` (a failed old
    /// master may still be listed); `tls` takes each node's `tls-port` when it has one.
    public init(shardsReply reply: RESPValue, seed: Node, tls: Bool = false) throws(RedisError) {
        guard case .array(let items) = reply else { throw Self.invalid("CLUSTER SHARDS is not an array") }
        var shards: [Shard] = []
        for item in items {
            let fields = try Self.fields(item)
            guard let slotsValue = fields["slots"], case .array(let bounds) = slotsValue, bounds.count % 2 == 0 else {
                throw Self.invalid("a shard without an even list of slot bounds")
            }
            guard let nodesValue = fields["nodes"], case .array(let nodes) = nodesValue else { throw Self.invalid("a shard without nodes") }
            var master: Node?
            var replicas: [Node] = []
            for nodeValue in nodes.prefix(64) {
                let node = try Self.fields(nodeValue)
                let health = node["health"]?.string ?? "online"
                guard let role = node["role"]?.string else { throw Self.invalid("a node without a role") }
                let port = tls ? (node["tls-port"] ?? node["port"]) : (node["port"] ?? node["tls-port"])
                let address = try Self.node(host: node["endpoint"]?.string ?? node["ip"]?.string, port: port, seed: seed)
                guard health == "online" else { continue }
                if role == "master" {
                    if master == nil { master = address }
                } else {
                    replicas.append(address)
                }
            }
            // A shard whose slots have no master (being failed over, or empty) is skipped: its
            // slots stay unserved until the next refresh.
            guard let master else { continue }
            var index = bounds.startIndex
            while index < bounds.endIndex {
                let first = try Self.slot(bounds[index])
                let last = try Self.slot(bounds[index + 1])
                guard first <= last else { throw Self.invalid("slot range \(first)-\(last)") }
                shards.append(Shard(slots: first...last, master: master, replicas: replicas))
                index += 2
            }
        }
        try self.init(shards: shards)
    }

    /// The topology in a `CLUSTER SLOTS` reply: `[[first, last, [host, port, id, ...], replicas...], ...]`.
    public init(slotsReply reply: RESPValue, seed: Node) throws(RedisError) {
        guard case .array(let ranges) = reply else { throw Self.invalid("CLUSTER SLOTS is not an array") }
        var shards: [Shard] = []
        for range in ranges {
            guard case .array(let parts) = range, parts.count >= 3 else { throw Self.invalid("a slot range without a master") }
            let first = try Self.slot(parts[0])
            let last = try Self.slot(parts[1])
            guard first <= last else { throw Self.invalid("slot range \(first)-\(last)") }
            var nodes: [Node] = []
            for nodeValue in parts[2...].prefix(64) {
                guard case .array(let node) = nodeValue, node.count >= 2 else { throw Self.invalid("a node without an address") }
                nodes.append(try Self.node(host: node[0].string, port: node[1], seed: seed))
            }
            shards.append(Shard(slots: first...last, master: nodes[0], replicas: Array(nodes.dropFirst())))
        }
        try self.init(shards: shards)
    }

    private static func fields(_ value: RESPValue) throws(RedisError) -> [String: RESPValue] {
        var fields: [String: RESPValue] = [:]
        switch value {
        case .map(let pairs):
            for pair in pairs.prefix(64) { if let key = pair.key.string { fields[key] = pair.value } }
        case .array(let flat) where flat.count % 2 == 0:
            var index = 0
            while index < min(flat.count, 128) {
                if let key = flat[index].string { fields[key] = flat[index + 1] }
                index += 2
            }
        default:
            throw invalid("a shard or node that is not a map")
        }
        return fields
    }

    private static func slot(_ value: RESPValue) throws(RedisError) -> Int {
        guard case .integer(let n) = value, (0..<Int64(HashSlot.count)).contains(n) else { throw invalid("a slot outside 0-16383") }
        return Int(n)
    }

    private static func node(host: String?, port: RESPValue?, seed: Node) throws(RedisError) -> Node {
        guard let port, case .integer(let number) = port, (1...65535).contains(number) else { throw invalid("a node without a valid port") }
        guard let host, !host.isEmpty, host != "?" else { return Node(host: seed.host, port: Int(number)) }
        guard host.utf8.count <= 255, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw invalid("a node with an invalid host") }
        return Node(host: host, port: Int(number))
    }

    private static func invalid(_ why: String) -> RedisError {
        RedisError(.protocolError, "invalid cluster topology: \(why)")
    }
}
