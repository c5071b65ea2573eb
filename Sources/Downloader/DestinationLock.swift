import Foundation

/// An exclusive claim on one destination across threads and processes (`flock` on
/// `NAME.partial.lock`): two workers given the same file (two plans naming one model, or a job
/// taken again after its lease expired while the first worker still runs) must not write one
/// partial file at once, nor rename the other's unfinished file into place.
final class DestinationLock {
    let path: String
    private let fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    /// Waits for the claim, looking at `cancelled` every 100 ms; `waiting` is called once when
    /// another holder is found. On a file system without `flock` the download goes on unclaimed.
    static func acquire(_ path: String, cancelled: CancelFlag, waiting: () -> Void) throws(DownloadError) -> DestinationLock? {
        var announced = false
        while true {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else { throw .io(path: path, operation: "create the lock file", errno: errno) }
            while flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let error = errno
                if error == ENOLCK || error == EOPNOTSUPP {
                    close(fd)
                    return nil
                }
                if error != EWOULDBLOCK && error != EINTR {
                    close(fd)
                    throw .io(path: path, operation: "lock", reason: String(cString: strerror(error)))
                }
                if cancelled.isSet {
                    close(fd)
                    throw .cancelled
                }
                if !announced {
                    announced = true
                    waiting()
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            // A holder unlinks the file before it lets go: a lock on an inode that is no longer at
            // `path` guards nothing (a newcomer would lock the new file), so open the path again.
            var held = stat()
            var named = stat()
            if fstat(fd, &held) == 0, lstat(path, &named) == 0, held.st_dev == named.st_dev, held.st_ino == named.st_ino {
                return DestinationLock(path: path, fd: fd)
            }
            close(fd)
        }
    }

    /// Removes the lock file, then lets go, so that no lock file outlives its download.
    func release() {
        unlink(path)
        close(fd)
    }
}
