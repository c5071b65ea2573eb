import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A thread whose end can be waited for completely, thread-local destructors included, which
/// Foundation's `Thread` does not offer. A download's threads touch libcurl and OpenSSL, whose
/// per-thread state is freed as the thread exits: a CLI that prints its result and exits while such
/// a thread is still tearing down races those frees against the libraries' exit-time destructors
/// (heap corruption, found by bench/fuzz: `malloc_consolidate(): invalid chunk size` after the
/// result was printed).
final class JoinableThread: @unchecked Sendable {
    private var handle = pthread_t()
    private var joined = false

    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Starts `body` on a new thread; nil when the system refuses one.
    init?(stackSize: Int, _ body: @escaping () -> Void) {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, max(stackSize, 64 << 10))
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        let status = pthread_create(&handle, &attributes, { raw in
            guard let raw else { return nil }
            Unmanaged<Body>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            return nil
        }
    }

    /// Returns once the thread has ended completely. Called once, from one thread.
    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(handle, nil)
    }
}
