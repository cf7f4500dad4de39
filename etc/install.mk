# install.mk: install the service files of etc/ (called by the top-level
# `make install` with DESTDIR PREFIX SYSCONFDIR BINDIR UBINDIR DATADIR, and
# RUNSTATEDIR when given). The paths written into the scripts, the unit and
# the logrotate snippet are rewritten to the ones of this installation.
#
#   $(SYSCONFDIR)/init.d/sluiced              LSB init script
#   $(SYSCONFDIR)/default/sluiced             its settings (not overwritten)
#   $(SYSCONFDIR)/sv/sluiced/{run,check,log/run}   runit service directory
#   $(SYSCONFDIR)/s6/sluiced/{run,notification-fd}  s6 service directory
#   $(SYSTEMDUNITDIR)/sluiced.service         systemd unit
#   $(SYSCONFDIR)/logrotate.d/sluice          logrotate snippet

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/sbin
UBINDIR    ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DATADIR    ?= $(PREFIX)/share/sluice
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
RUNSTATEDIR ?= /run
DESTDIR    ?=

SED_PATHS = sed -e 's|/usr/local/sbin/sluiced|$(BINDIR)/sluiced|g' \
		-e 's|/usr/local/bin/sluicectl|$(UBINDIR)/sluicectl|g' \
		-e 's|/etc/sluice/|$(SYSCONFDIR)/sluice/|g' \
		-e 's|/etc/default/sluiced|$(SYSCONFDIR)/default/sluiced|g' \
		-e 's|/etc/init.d/sluiced|$(SYSCONFDIR)/init.d/sluiced|g' \
		-e 's|/run/sluiced.pid|$(RUNSTATEDIR)/sluiced.pid|g'

.PHONY: install
install:
	install -d $(DESTDIR)$(SYSCONFDIR)/init.d $(DESTDIR)$(SYSCONFDIR)/default \
	    $(DESTDIR)$(SYSCONFDIR)/sv/sluiced/log $(DESTDIR)$(SYSCONFDIR)/s6/sluiced \
	    $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	$(SED_PATHS) etc/init.d/sluiced > $(DESTDIR)$(SYSCONFDIR)/init.d/sluiced
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/sluiced
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/sluiced ] || \
	    $(SED_PATHS) etc/default/sluiced > $(DESTDIR)$(SYSCONFDIR)/default/sluiced
	for f in run check log/run; do \
	    $(SED_PATHS) etc/runit/sluiced/$$f > $(DESTDIR)$(SYSCONFDIR)/sv/sluiced/$$f && \
	    chmod 0755 $(DESTDIR)$(SYSCONFDIR)/sv/sluiced/$$f || exit 1; done
	$(SED_PATHS) etc/s6/sluiced/run > $(DESTDIR)$(SYSCONFDIR)/s6/sluiced/run
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/s6/sluiced/run
	install -m 0644 etc/s6/sluiced/notification-fd $(DESTDIR)$(SYSCONFDIR)/s6/sluiced/
	$(SED_PATHS) etc/systemd/sluiced.service > $(DESTDIR)$(SYSTEMDUNITDIR)/sluiced.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/sluiced.service
	$(SED_PATHS) etc/logrotate.d/sluice > $(DESTDIR)$(SYSCONFDIR)/logrotate.d/sluice
	chmod 0644 $(DESTDIR)$(SYSCONFDIR)/logrotate.d/sluice
