/// One multi-node Redis deployment (a cluster, a sentinel set-up) at a time in the test
/// process: each is six or five servers, and several at once on a 2-core machine starve the
/// time-bound tests running beside them. Callers wait their turn, in order.
public actor TopologyTurn {
    /// The process's turn-taking.
    public static let shared = TopologyTurn()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    /// Waits for the turn.
    public func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Waits for the turn, starts a deployment, runs `body` with it, and stops it before the
    /// next deployment's turn, whether `body` succeeded or not.
    public nonisolated static func withDeployment<Deployment, T>(
        start: () async throws -> Deployment, stop: (Deployment) -> Void, _ body: (Deployment) async throws -> T
    ) async throws -> T {
        await shared.acquire()
        do {
            let deployment = try await start()
            let result: T
            do {
                result = try await body(deployment)
            } catch {
                stop(deployment)
                throw error
            }
            stop(deployment)
            await shared.release()
            return result
        } catch {
            await shared.release()
            throw error
        }
    }

    /// Ends the turn; the next in line goes.
    public func release() {
        if waiting.isEmpty {
            busy = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}
