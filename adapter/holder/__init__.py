"""The reference purge agent (``contactpoint-gateway holder``, docs/holders.md): run beside a
local system that received children's data from the gateway, with that system's client
credentials, it finds its purge Task, hands the children to the local system's purge command or
HTTP hook, and answers the Task — resuming safely after a crash. It is a client of the gateway's
public API only (SMART Backend Services and FHIR ``Task``), like any holder's own software."""
