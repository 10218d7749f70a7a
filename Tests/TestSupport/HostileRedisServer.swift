import Foundation

/// A fake Redis, in Python, that answers the handshake and then answers every command with a
/// hostile stream, until the client hangs up:
/// - `attributes`: RESP3 attribute frames, one after the other, without end;
/// - `hugeBulk`: a bulk string header declaring 2 GiB, then bytes without end;
/// - `endlessArray`: an array declaring 16 million elements, then small elements without end.
public final class HostileRedisServer: Sendable {
    /// What the server sends after the handshake.
    public enum Mode: String, Sendable, CaseIterable {
        case attributes, hugeBulk, endlessArray
    }

    /// The port it listens on (127.0.0.1).
    public let port: Int
    private let process: Process

    private static let script = #"""
        import socket, sys, threading
        mode = sys.argv[1]
        streams = {
            "attributes": (b"", b"|1\r\n+k\r\n+v\r\n" * 8192),
            "hugeBulk": (b"$2147483648\r\n", b"x" * 65536),
            "endlessArray": (b"*16000000\r\n", b"+x\r\n" * 16384),
        }
        head, chunk = streams[mode]
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        print(server.getsockname()[1], flush=True)
        def serve(connection):
            try:
                connection.recv(65536)              # HELLO 3
                connection.sendall(b"%0\r\n")       # an empty map: RESP3, no more to say
                connection.recv(65536)              # the command
                connection.sendall(head)
                while True:
                    connection.sendall(chunk)
            except OSError:
                pass
            finally:
                connection.close()
        while True:
            connection, _ = server.accept()
            threading.Thread(target=serve, args=(connection,), daemon=True).start()
        """#

    private init(port: Int, process: Process) {
        self.port = port
        self.process = process
    }

    /// Starts one in `mode` and waits until it listens.
    public static func start(_ mode: Mode) throws -> HostileRedisServer {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, mode.rawValue]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The first line is the port.
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1), let first = byte.first, first != UInt8(ascii: "\n") {
            line.append(first)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self)) else {
            process.terminate()
            throw RedisFixtureError(message: "the hostile Redis did not start (python3 missing?)")
        }
        return HostileRedisServer(port: port, process: process)
    }

    /// Stops it.
    public func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// This process's resident memory, in bytes (Linux `/proc/self/status`), or nil elsewhere.
public func residentMemoryBytes() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
    else { return nil }
    return kilobytes * 1024
}
