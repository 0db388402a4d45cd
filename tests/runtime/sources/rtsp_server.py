"""A real RTSP server for the tests: GStreamer's RTSP server (gst-rtsp-server through the system Python's
gi), serving a generated H.264 stream (moving test pattern, x264enc) at rtsp://127.0.0.1:PORT/cam.

Run by the system Python (``/usr/bin/python3``, which has ``gi``), never imported by the test process:

    /usr/bin/python3 rtsp_server.py PORT [USER PASSWORD] [WIDTHxHEIGHT]

It prints ``ready`` once it listens, and serves until it is terminated.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    port = sys.argv[1]
    user, password = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else (None, None)
    w, h = (sys.argv[4] if len(sys.argv) > 4 else "320x240").split("x")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw, width={w}, height={h}, framerate=30/1 ! "
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(True)
    if user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print("cannot listen", flush=True)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
