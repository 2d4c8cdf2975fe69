import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Kamailio's `-u USER` / `-g GROUP`: the proxy binds its listening sockets
/// with the rights it was started with (root, for ports below 1024 without
/// capabilities), then takes the given user's and group's ids for good.
///
/// A user is a name or a number; a name brings its primary group and its
/// supplementary groups (initgroups) unless `-g` names a group. A group
/// alone changes only the group (and drops root's supplementary groups).
/// When the target user is not root and the process could still become
/// root afterwards, it refuses to run.
enum Privileges {
    struct Target: Equatable {
        var uid: uid_t?
        var gid: gid_t?
        /// The user's name, for initgroups (nil when given as a number without a passwd entry).
        var userName: String?
    }

    enum Failure: Error, Equatable, CustomStringConvertible {
        case unknownUser(String)
        case unknownGroup(String)
        case call(String, Int32)
        case stillPrivileged

        var description: String {
            switch self {
            case .unknownUser(let u): return "-u \(u): no such user"
            case .unknownGroup(let g): return "-g \(g): no such group"
            case .call(let name, let e): return "\(name) failed: \(String(cString: strerror(e)))"
            case .stillPrivileged: return "the process could become root again after dropping its privileges; refusing to run"
            }
        }
    }

    /// Looks the names up (before anything is bound, so a typo stops the
    /// start early). nil when neither was given.
    static func resolve(user: String?, group: String?) -> Result<Target?, Failure> {
        if user == nil && group == nil { return .success(nil) }
        var t = Target()
        if let user {
            if let pw = getpwnam(user) {
                t.uid = pw.pointee.pw_uid
                t.gid = pw.pointee.pw_gid
                t.userName = String(cString: pw.pointee.pw_name)
            } else if let n = UInt32(user) {
                t.uid = uid_t(n)
                if let pw = getpwuid(uid_t(n)) {
                    t.gid = pw.pointee.pw_gid
                    t.userName = String(cString: pw.pointee.pw_name)
                }
            } else {
                return .failure(.unknownUser(user))
            }
        }
        if let group {
            if let gr = getgrnam(group) {
                t.gid = gr.pointee.gr_gid
            } else if let n = UInt32(group) {
                t.gid = gid_t(n)
            } else {
                return .failure(.unknownGroup(group))
            }
        }
        return .success(t)
    }

    /// Takes the target's ids: groups first (they need root), then the
    /// user. Already running as the target: nothing to do.
    static func drop(to t: Target) -> Result<Void, Failure> {
        if let gid = t.gid, getgid() != gid || getegid() != gid || geteuid() == 0 {
            if geteuid() == 0 {
                if let name = t.userName, t.uid != nil {
                    if initgroups(name, gid) != 0 { return .failure(.call("initgroups", errno)) }
                } else {
                    var one = [gid]
                    if setgroups(1, &one) != 0 { return .failure(.call("setgroups", errno)) }
                }
            }
            if setgid(gid) != 0 { return .failure(.call("setgid(\(gid))", errno)) }
        }
        if let uid = t.uid, getuid() != uid || geteuid() != uid {
            if setuid(uid) != 0 { return .failure(.call("setuid(\(uid))", errno)) }
        }
        if let uid = t.uid, uid != 0 {
            // For good: no id of root left, and no way back.
            if getuid() == 0 || geteuid() == 0 || setuid(0) == 0 { return .failure(.stillPrivileged) }
        }
        return .success(())
    }
}
