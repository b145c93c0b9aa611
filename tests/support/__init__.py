"""What the tests share: paths, monitors and principals, fakes of outside services checked against their
vendored contracts (``contracts/``), receivers, clients and helpers. Imported as ``support.<module>``; test
modules never import each other or ``conftest``."""
