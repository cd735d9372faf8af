"""Certificates for the charger security profiles (issue 16), pure where it can be.

``identity`` says what a charger's client certificate must say (mutual TLS), ``csr`` what a
charger's certificate signing request must say, ``ca`` is the charger CA that signs them.
Gateway, fleet, control and config all read this package; it reads only ``evota.files``.
"""
