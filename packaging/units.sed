# The examples/agent units and crontab as the .deb installs them: the binary in /usr/bin,
# the units in /lib/systemd/system, and no manual install steps (the package does those).
s|/etc/systemd/system/|/lib/systemd/system/|
s|/usr/local/bin/berth|/usr/bin/berth|g
/^#   useradd /d
/^#   install /d
