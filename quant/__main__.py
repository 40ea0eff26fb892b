from quant.cli import main

raise SystemExit(main())
