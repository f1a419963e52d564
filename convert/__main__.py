from convert.crack_cli import main

main()
