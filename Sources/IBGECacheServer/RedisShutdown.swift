import Redis
import ServiceLifecycle

/// Closes the Redis client's connections when the application shuts down.
struct RedisShutdown: Service {
    let client: RedisClient

    func run() async throws {
        try? await gracefulShutdown()
        await client.shutdown()
    }
}
