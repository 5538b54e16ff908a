"""PyCam Permanent: the supervisor and everything that touches the world.

Importing this package must not touch hardware or import vendor libraries (picamera2, seabreeze, pyplis, cv2).
"""

__version__ = "0.1.0"
